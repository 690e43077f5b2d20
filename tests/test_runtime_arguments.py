"""PairClassifier argument checks: rank() takes any iterable of str and names what was wrong (texts[i],
query, top_k); load() refuses an absurd thread count up front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pairbert.runtime import PairClassifier, PredictorError
from pairbert.runtime.predictor import THREADS_PER_CPU, max_threads, usable_cpus

TEXTS = ["paris.", "eight legs.", "paris is a city."]
QUERY = "what is the capital of france?"


@pytest.fixture(scope="module")
def clf(tiny_bundle):
    with PairClassifier.load(tiny_bundle, variant="fp32") as clf:
        yield clf


@pytest.mark.parametrize(
    "texts",
    [
        (t for t in TEXTS),
        tuple(TEXTS),
        np.array(TEXTS),
        np.array(TEXTS, dtype=object),
        iter(TEXTS),
        dict.fromkeys(TEXTS),  # an iterable of str: its keys, in order
    ],
    ids=["generator", "tuple", "ndarray-str", "ndarray-object", "iterator", "dict"],
)
def test_rank_takes_any_iterable_of_str(clf, texts):
    assert clf.rank(QUERY, texts) == clf.rank(QUERY, TEXTS)


@pytest.mark.parametrize(
    "query, texts, message",
    [
        (QUERY, None, "texts must be a list of str, got NoneType"),
        (QUERY, 3, "texts must be a list of str, got int"),
        (QUERY, "one string", "texts must be a list of str, not a single str"),
        (QUERY, b"ab", "texts must be a list of str, not a single bytes"),
        (QUERY, {"a", "b"}, r"texts must be a list of str, not a set \(it has no order\)"),
        (QUERY, frozenset("ab"), r"texts must be a list of str, not a frozenset \(it has no order\)"),
        (QUERY, ["a", 1], r"^texts\[1\] must be a str, got int$"),
        (QUERY, ["a", b"b"], r"^texts\[1\] must be a str, got bytes$"),
        (QUERY, ["a", "b\ud800"], r"^texts\[1\] is not valid Unicode"),
        (QUERY, np.array([["a", "b"]]), r"^texts\[0\] must be a str, got ndarray$"),
        (None, ["a"], r"^query must be a str, got NoneType$"),
        ("q\ud800", ["a"], r"^query is not valid Unicode"),
    ],
)
def test_rank_names_what_was_wrong(clf, query, texts, message):
    with pytest.raises(PredictorError, match=message):
        clf.rank(query, texts)


def test_rank_top_k_takes_numpy_integers_like_batch_size_and_refuses_bool(clf):
    full = clf.rank(QUERY, TEXTS)
    assert clf.rank(QUERY, TEXTS, top_k=np.int64(2), batch_size=np.int64(2)) == full[:2]
    assert clf.rank(QUERY, TEXTS, top_k=np.int32(0)) == []
    for bad in (True, np.bool_(True), -1, np.int64(-1), 1.0, "2"):
        with pytest.raises(PredictorError, match="top_k must be a non-negative int or None"):
            clf.rank(QUERY, TEXTS, top_k=bad)


def test_an_absurd_thread_count_is_refused_and_the_cap_is_allowed(tiny_bundle):
    cap = max_threads()
    assert cap == THREADS_PER_CPU * usable_cpus()
    for too_many in (cap + 1, 9999):
        with pytest.raises(
            PredictorError, match=rf"threads={too_many} is more than {THREADS_PER_CPU} per CPU"
        ):
            PairClassifier.load(tiny_bundle, variant="fp32", threads=too_many)
    with PairClassifier.load(tiny_bundle, variant="fp32", threads=np.int64(2)) as ok:
        assert ok.threads == 2 and len(ok.predict([("q", "a")])) == 1


def test_a_variant_this_pairbert_cannot_run_is_named(tiny_bundle, tmp_path):
    import shutil

    from helpers import edit_manifest

    from pairbert.runtime import BundleError, PairClassifier

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    edit_manifest(
        bundle,
        lambda m: m["variants"].__setitem__("fp32-copy", {**m["variants"]["fp32"], "name": "fp32-copy"}),
    )
    with pytest.raises(
        BundleError, match="variant 'fp32-copy' is in this bundle but this pairbert cannot run"
    ):
        PairClassifier.load(bundle, variant="fp32-copy")


def test_asking_for_a_variant_that_did_not_pass_warns(tiny_bundle, tmp_path, caplog):
    import logging
    import shutil

    from helpers import edit_manifest

    from pairbert.runtime import PairClassifier

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    edit_manifest(bundle, lambda m: m["variants"]["fp32"].__setitem__("passed_parity", False))
    with caplog.at_level(logging.WARNING, logger="pairbert.runtime.predictor"):
        clf = PairClassifier.load(bundle, variant="fp32")
    assert clf.variant == "fp32"
    assert "did not pass its parity gate (forced)" in caplog.text


def test_a_closed_predictor_says_so(tiny_bundle):
    with PairClassifier.load(tiny_bundle, variant="fp32") as clf:
        pass
    with pytest.raises(PredictorError, match="this PairClassifier is closed"):
        clf.predict([("a", "b")])
    with pytest.raises(PredictorError, match="this PairClassifier is closed"):
        clf.rank("a", ["b"])


def test_a_call_is_tokenized_in_slices_with_the_same_results(clf, monkeypatch):
    from helpers import varied_pairs

    from pairbert.runtime import predictor

    pairs = [(r["question"], r["answer"]) for r in varied_pairs(23, seed=5)]
    whole = clf.predict(pairs).probabilities
    monkeypatch.setattr(predictor, "TOKENIZE_SLICE", 4)  # 6 slices, the last one short
    np.testing.assert_allclose(clf.predict(pairs).probabilities, whole, atol=1e-6)


def _retokenized(bundle: Path, tmp_path: Path, change) -> Path:
    """A copy of `bundle` whose tokenizer.json was edited, with the manifest's checksums redone (as a
    hand-built or tampered bundle would be)."""
    import hashlib
    import json
    import shutil

    from helpers import edit_manifest

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    tok = json.loads((copy / "tokenizer.json").read_text())
    change(tok)
    data = json.dumps(tok).encode()
    (copy / "tokenizer.json").write_bytes(data)
    edit_manifest(copy, lambda m: m.update(tokenizer_sha256=hashlib.sha256(data).hexdigest()))
    return copy


def test_a_graph_that_cannot_run_the_tokens_is_one_line_not_a_library_traceback(tiny_bundle, tmp_path):
    from pairbert.runtime.sessions import BackendError

    copy = _retokenized(tiny_bundle, tmp_path, lambda t: t["model"]["vocab"].update(zzzz=999_999))
    with PairClassifier.load(copy, variant="fp32") as clf:
        with pytest.raises(
            BackendError, match=r"^variant fp32: ONNX Runtime failed to run the graph \("
        ) as info:
            clf.predict([("zzzz", "b")])
        assert "\n" not in str(info.value)
        assert clf.predict([("a", "b")]).labels.shape == (1,)  # other texts still run


def test_a_tokenizer_that_cannot_encode_a_text_is_a_predictor_error(tiny_bundle, tmp_path):
    copy = _retokenized(tiny_bundle, tmp_path, lambda t: t["model"].update(unk_token="[NOPE]"))
    with PairClassifier.load(copy, variant="fp32") as clf:
        with pytest.raises(PredictorError, match=r"the tokenizer cannot encode these texts \(.*UNK"):
            clf.predict([("ʘ", "b")])


@pytest.mark.parametrize("variant", ["fp32", "openvino-fp32"])
def test_a_manifest_naming_more_labels_than_the_graph_gives_is_refused_at_load(
    tiny_bundle, tmp_path, variant
):
    import shutil

    from helpers import edit_manifest

    from pairbert.runtime.bundle import BundleError
    from pairbert.runtime.sessions import openvino_available

    if variant.startswith("openvino") and not openvino_available():
        pytest.skip("needs pairbert[openvino]")
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)

    def three_labels(m):
        m["contract"]["outputs"][0]["axes"] = ["batch", 3]
        m["labels"] = ["a", "b", "c"]
        for rows in m["answer_check"]["probabilities"].values():  # consistent with the manifest's 3 labels
            rows[:] = [[0.2, 0.3, 0.5] for _ in rows]

    edit_manifest(copy, three_labels)
    with pytest.raises(
        BundleError, match="the graph gives 2 logits per pair but the manifest names 3 labels"
    ):
        PairClassifier.load(copy, variant=variant)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": ["fp32"]}, "variant must be a str"),
        ({"verify": "no"}, "verify must be True or False, got 'no'"),
        ({"calibrate": 0}, "calibrate must be True or False, got 0"),
        ({"max_batch_tokens": True}, "max_batch_tokens must be a positive int or None, got True"),
    ],
)
def test_load_arguments_of_the_wrong_type_are_named(tiny_bundle, kwargs, message):
    with pytest.raises(PredictorError, match=message):
        PairClassifier.load(tiny_bundle, **kwargs)


@pytest.mark.parametrize("bundle", [None, 3, b"bundles/default"])
def test_load_names_a_bundle_that_is_not_a_path(bundle):
    with pytest.raises(PredictorError, match="bundle must be a folder path"):
        PairClassifier.load(bundle)
