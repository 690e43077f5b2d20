"""Request bodies in, checked Python values out; shared by `pairbert serve` and the Ray Serve deployment.

Anything a client sends either parses into the values below or raises RequestError with the HTTP status and
the field at fault (422 for malformed JSON or wrong types, 413 for a request over a limit)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass


class RequestError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def body(self) -> dict:
        out = {"error": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class Limits:
    max_request_pairs: int = 1024
    max_text_chars: int = 20_000


@dataclass(frozen=True)
class RerankRequest:
    query: str
    texts: list[str]
    top_n: int | None


def parse_json(body: bytes) -> object:
    """The body as JSON, or a 422 that says what is wrong with it (never a parser traceback)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(422, f"body is not UTF-8 (byte {exc.start + 1})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RequestError:
        raise
    except json.JSONDecodeError as exc:
        raise RequestError(
            422, f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise RequestError(422, "body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal past Python's digit limit
        raise RequestError(422, f"body is not valid JSON: {str(exc).splitlines()[0][:200]}") from None


def _reject_constant(name: str) -> float:
    raise RequestError(422, f"body is not valid JSON: {name} is not allowed")


def _unique_keys(items: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are unique: `{"pairs": A, "pairs": B}` is refused, not read as B."""
    out: dict = {}
    for key, value in items:
        if key in out:
            raise RequestError(422, f"body has the key {_shown(key)} twice in one object")
        out[key] = value
    return out


def check_content_encoding(value: str | None) -> None:
    """415 for a compressed body (Content-Encoding gzip, br, ...): the server reads plain JSON only."""
    if value is not None and value.strip().lower() not in ("", "identity"):
        raise RequestError(
            415, f"Content-Encoding {_shown(value.strip())} is not supported: send the body uncompressed"
        )


def check_body_headers(headers, limit: int) -> None:
    """Before reading a body: 415 for a compressed one, 413 when its Content-Length is over `limit`."""
    check_content_encoding(headers.get("content-encoding"))
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body has {declared} bytes; the limit is {limit}")


def add_to_body(chunks: list[bytes], size: int, chunk: bytes, limit: int) -> int:
    """Append a piece of a body being read; 413 as soon as the body passes `limit`. Returns the new size."""
    size += len(chunk)
    if size > limit:
        raise RequestError(413, f"body is over the limit of {limit} bytes")
    chunks.append(chunk)
    return size


def _text(value: object, field: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise RequestError(422, f"{field} must be a string, got {_got(value)}", field)
    if len(value) > limits.max_text_chars:
        raise RequestError(
            413, f"{field} has {len(value)} characters; the limit is {limits.max_text_chars}", field
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            422, f"{field} is not valid Unicode ({exc.reason} at position {exc.start})", field
        ) from None
    return value


def _object(payload: object) -> dict:
    if not isinstance(payload, dict):
        raise RequestError(422, f"body must be a JSON object, got {_kind(payload)}")
    return payload


def _list(value: object, field: str, limits: Limits) -> list:
    if not isinstance(value, list):
        raise RequestError(422, f"{field} must be a list, got {_kind(value)}", field)
    if len(value) > limits.max_request_pairs:
        raise RequestError(
            413, f"{field} has {len(value)} items; the limit is {limits.max_request_pairs}", field
        )
    return value


def predict_pairs(payload: object, limits: Limits) -> list[tuple[str, str]]:
    """`{"pairs": [["question", "answer"], ...]}` → list of (question, answer)."""
    body = _object(payload)
    if "pairs" not in body:
        raise RequestError(422, "missing field: pairs", "pairs")
    pairs = []
    for i, pair in enumerate(_list(body["pairs"], "pairs", limits)):
        if not isinstance(pair, list) or len(pair) != 2:
            shape = f"a list of {len(pair)}" if isinstance(pair, list) else _kind(pair)
            raise RequestError(
                422, f"pairs[{i}] must be a [question, answer] list, got {shape}", f"pairs[{i}]"
            )
        pairs.append((_text(pair[0], f"pairs[{i}][0]", limits), _text(pair[1], f"pairs[{i}][1]", limits)))
    return pairs


def rerank_request(payload: object, limits: Limits) -> RerankRequest:
    """`{"query": "...", "texts": ["...", ...], "top_n": optional int}`."""
    body = _object(payload)
    for name in ("query", "texts"):
        if name not in body:
            raise RequestError(422, f"missing field: {name}", name)
    query = _text(body["query"], "query", limits)
    texts = [_text(t, f"texts[{i}]", limits) for i, t in enumerate(_list(body["texts"], "texts", limits))]
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0):
        raise RequestError(422, f"top_n must be a non-negative integer or null, got {_got(top_n)}", "top_n")
    return RerankRequest(query, texts, top_n)


def prediction_body(labels, probabilities, label_names) -> dict:
    """The /predict answer, from a predictor's arrays; like runtime's Prediction, `label_names` names the
    columns of `probabilities` (pair i's label is label_names[labels[i]])."""
    return {
        "labels": [int(x) for x in labels],
        "label_names": list(label_names),
        "probabilities": [[float(p) for p in row] for row in probabilities],
        "match_probability": [float(row[-1]) for row in probabilities],
    }


def rerank_body(scores, top_n: int | None) -> list[dict]:
    """TEI's /rerank shape: [{"index": i, "score": p}, ...], best first, ties in input order."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return [{"index": i, "score": float(scores[i])} for i in order[:top_n]]


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return (
            "a number" if not (isinstance(value, float) and math.isinf(value)) else "an out-of-range number"
        )
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _shown(value: object, limit: int = 40) -> str:
    """A JSON scalar as the client wrote it (shortened): what an error message quotes back."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: quote it escaped
        text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _got(value: object) -> str:
    """What a field held, for "must be X, got Y": the value for a scalar (`-1`, `true`, `"abc"`), the kind
    for an object or list."""
    if isinstance(value, (dict, list)):
        return _kind(value)
    return _kind(value) if isinstance(value, float) and math.isinf(value) else _shown(value)
