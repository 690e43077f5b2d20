"""Pairs that share a question feed it once: the towers' question branch reads the question alone, and the
graph (whose orders have their own batch axes) broadcasts its one row over the answers."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest
from helpers import edit_manifest, name_graph_axis, train_tiny_towers, varied_pairs

from pairbert.runtime import PairClassifier, PredictorError

VARIANTS = ("fp32", "optimized", "int8")
if importlib.util.find_spec("openvino") is not None:
    VARIANTS += ("openvino-fp32", "openvino-bf16", "openvino-int8")

QUESTION = "what is the capital of france"


@pytest.fixture(scope="module")
def towers_bundle(tmp_path_factory, tiny_tokenizer):
    from pairbert.export.bundle_writer import ExportSettings, export_bundle

    root = tmp_path_factory.mktemp("towers")
    checkpoint = train_tiny_towers(root, tiny_tokenizer)
    export_bundle(checkpoint, root / "bundle", ExportSettings(variants=VARIANTS), echo=None)
    return root / "bundle"


def _texts(n: int) -> list[str]:
    return [row["answer"] for row in varied_pairs(n, seed=7)]


class Feeds:
    """Records the (qa, aq) batch sizes of each run a predictor makes."""

    def __init__(self, clf: PairClassifier):
        self.shapes: list[tuple[int, int]] = []
        run = clf.session.run

        def spy(feed):
            self.shapes.append((len(feed["qa_input_ids"]), len(feed["aq_input_ids"])))
            return run(feed)

        clf.session.run = spy


def _apart(clf: PairClassifier, call):
    """`call(clf)` with the question fed once (as loaded), then with every pair's row: both results."""
    once = call(clf)
    clf.question_once = False
    try:
        return once, call(clf)
    finally:
        clf.question_once = True


@pytest.mark.parametrize("variant", VARIANTS)
def test_rank_feeds_the_query_once_with_the_same_scores(towers_bundle, variant):
    texts = _texts(40)
    with PairClassifier.load(towers_bundle, variant=variant) as clf:
        assert clf.question_once
        feeds = Feeds(clf)
        once, every = _apart(clf, lambda c: c.rank(QUESTION, texts, batch_size=16))
        fed_once, fed_every = feeds.shapes[:3], feeds.shapes[3:]
    # 40 answers in runs of at most 16: three runs, each with the question's one row
    assert [qa for qa, _ in fed_once] == [1, 1, 1] and sum(aq for _, aq in fed_once) == 40
    assert all(qa == aq for qa, aq in fed_every) and sum(qa for qa, _ in fed_every) == 40
    got, want = dict(once), dict(every)
    # the tiny model's scores span ~1e-3: a pair given another's answer moves by about that much
    spread = max(want.values()) - min(want.values())
    assert spread > 1e-4
    assert max(abs(got[i] - want[i]) for i in want) <= 1e-6 + 0.02 * spread


@pytest.mark.parametrize(
    ("variant", "least"), [("optimized", 4)] + [("openvino-fp32", 8)] * ("openvino-fp32" in VARIANTS)
)
def test_only_questions_shared_by_enough_pairs_are_fed_once(towers_bundle, variant, least):
    """A run mixing a question asked `least` times, one asked `least` - 1 times and singles: the first goes
    as one run with one question row, the rest as before; every pair keeps its own answer. ONNX Runtime on
    the CPU groups from 4 pairs, OpenVINO (whose runs have a higher fixed cost) from 8."""
    texts = _texts(2 * least + 1)
    many, few = least, least - 1
    pairs = [(QUESTION, t) for t in texts[:many]] + [("who wrote hamlet", t) for t in texts[many:-2]]
    pairs += [("is a spider a cat", texts[-2]), ("how many legs", texts[-1])]
    pairs = pairs[::2] + pairs[1::2]  # interleaved: grouping must not depend on the order
    n = len(pairs)
    with PairClassifier.load(towers_bundle, variant=variant) as clf:
        assert clf.shared_question_pairs == least
        for bad in (1, 2.5, True, "4"):
            with pytest.raises(PredictorError, match="shared_question_pairs must be an int of at least 2"):
                clf.shared_question_pairs = bad
        assert clf.shared_question_pairs == least
        feeds = Feeds(clf)
        once, every = _apart(clf, lambda c: c.predict(pairs).probabilities)
        assert feeds.shapes == [(1, many), (few + 2, few + 2), (n, n)]  # fed once, then every row
        # the server's path (encodings tokenized on arrival) groups the same way
        feeds.shapes.clear()
        qa, aq = clf.encoder.tokenize([q for q, _ in pairs], [a for _, a in pairs])
        served = clf.predict_encoded(qa, aq).probabilities
        assert feeds.shapes == [(1, many), (few + 2, few + 2)]
    tolerance = 1e-6 if variant == "optimized" else 1e-5
    np.testing.assert_allclose(once, every, atol=tolerance)
    np.testing.assert_allclose(served, every, atol=tolerance)
    with PairClassifier.load(towers_bundle, variant=variant) as clf:
        feeds = Feeds(clf)
        clf.rank(QUESTION, texts[:3])  # a call whose pairs all share the question: fed once however few
        clf.predict([(QUESTION, t) for t in texts[:few]] + [("who wrote hamlet", texts[few])])  # too few
        clf.predict([(QUESTION, texts[0])])
        assert feeds.shapes == [(1, 3), (few + 1, few + 1), (1, 1)]


def test_grouped_runs_keep_to_the_token_cap(towers_bundle):
    """As in every run, a branch holds at most max_batch_tokens padded tokens (the answers' branch here)."""
    with PairClassifier.load(towers_bundle, variant="optimized", max_batch_tokens=60) as clf:
        runs = []
        run = clf.session.run

        def spy(feed):
            runs.append((feed["qa_input_ids"].shape, feed["aq_input_ids"].shape))
            return run(feed)

        clf.session.run = spy
        clf.rank(QUESTION, _texts(30))
    assert all(qa[0] == 1 for qa, _ in runs) and sum(aq[0] for _, aq in runs) == 30
    assert all(aq[0] * aq[1] <= 60 for qa, aq in runs if aq[0] > 1) and len(runs) > 1


def test_a_question_cut_differently_per_pair_is_not_shared(towers_bundle):
    """Pairs are truncated longest-first: a long question beside a long answer loses tokens, beside a short
    one it does not, so only pairs whose question rows are the same are grouped."""
    long_question = " ".join(["what is the capital of france"] * 20)  # ~120 tokens
    texts = ["paris"] * 8 + [" ".join(["the river is blue"] * 20)] * 8
    with PairClassifier.load(towers_bundle, variant="optimized") as clf:
        feeds = Feeds(clf)
        once, every = _apart(clf, lambda c: c.rank(long_question, texts))
        assert sorted(feeds.shapes[:2]) == [(1, 8), (1, 8)]  # two cuts of the question, eight pairs each
    assert dict(once) == pytest.approx(dict(every), abs=1e-6)


def test_cross_bundles_and_graphs_with_one_batch_axis_feed_every_row(towers_bundle, tiny_bundle, tmp_path):
    import shutil

    from pairbert.runtime.bundle import BundleError
    from pairbert.runtime.contract import BATCH_AXIS, GraphContract, orders_batched_apart

    with PairClassifier.load(tiny_bundle, variant="optimized") as clf:  # cross-encoding: whole pairs
        assert clf.encoder.feed == "pair" and not clf.question_once
        with pytest.raises(PredictorError, match="cannot feed one question row for many answers"):
            clf.question_once = True
        with pytest.raises(PredictorError, match="must be True or False, got str"):
            clf.question_once = "no"
        clf.question_once = False
        feeds = Feeds(clf)
        clf.rank(QUESTION, _texts(8))
        assert feeds.shapes == [(8, 8)]
    bundle = tmp_path / "bundle"
    shutil.copytree(towers_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert orders_batched_apart(GraphContract.from_dict(manifest["contract"]))
    # a graph naming one batch axis for both orders (as exported before): every pair's row is fed
    name_graph_axis(bundle, "optimized", 0, BATCH_AXIS)
    with pytest.raises(BundleError, match="its own batch axis but the graph's inputs have"):
        PairClassifier.load(bundle, variant="optimized")

    def one_axis(d):
        for t in d["contract"]["inputs"]:
            t["axes"][0] = BATCH_AXIS

    edit_manifest(bundle, one_axis)
    with PairClassifier.load(bundle, variant="optimized") as clf:
        assert clf.encoder.apart and not clf.question_once
        feeds = Feeds(clf)
        clf.rank(QUESTION, _texts(8))
        assert feeds.shapes == [(8, 8)]


def test_padding_keeps_a_shared_question_row_apart(towers_bundle):
    """OpenVINO's length buckets pad each order on its own when their batches differ; CUDA graph replay
    pads to the larger batch, repeating the question's row (checked on the CPU session: the padding is
    under test)."""
    from pairbert.runtime.cuda_graphs import graph_shape
    from pairbert.runtime.shapes import CPU_SEQUENCE_BUCKETS, pad_feed, pad_length

    with PairClassifier.load(towers_bundle, variant="optimized") as clf:
        qa, aq = clf.encoder.tokenize([QUESTION] * 7, _texts(7))
        feed = clf.encoder.collate(qa[:1], aq)
        assert len(feed["qa_input_ids"]) == 1 and len(feed["aq_input_ids"]) == 7
        padded = pad_length(feed, CPU_SEQUENCE_BUCKETS)
        assert {len(v) for k, v in padded.items() if k.startswith("qa_")} == {1}
        assert {v.shape[1] for v in padded.values()} <= set(CPU_SEQUENCE_BUCKETS)
        want = clf.session.run(feed)
        np.testing.assert_allclose(clf.session.run(padded), want, atol=1e-5)
        batch, length = graph_shape(feed)
        assert batch == 8
        np.testing.assert_allclose(clf.session.run(pad_feed(feed, batch, length))[:7], want, atol=1e-5)


def test_export_refuses_a_graph_that_broadcasts_the_question_wrongly(tmp_path):
    """The shapes stage feeds one question row for seven answers and compares with the row repeated: a
    graph whose answer depends on how many question rows it gets (here: a sum over the whole batch) fails."""
    from onnx import TensorProto, helper

    from pairbert.export.bundle_writer import shape_grid_feeds, shared_question_feed
    from pairbert.export.validation import ExportError, StageReport, check_session_and_shapes
    from pairbert.runtime.contract import CONTRACT

    inputs = [helper.make_tensor_value_info(t.name, TensorProto.INT64, list(t.axes)) for t in CONTRACT.inputs]
    nodes = [
        helper.make_node("Cast", ["qa_input_ids"], ["qa"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["qa"], ["qa_total"], keepdims=1),  # over every row: [1, 1]
        helper.make_node("Cast", ["aq_input_ids"], ["aq"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["aq", "one"], ["aq_rows"], keepdims=1),  # [aq_batch, 1]
        helper.make_node("Mul", ["qa_total", "aq_rows"], ["score"]),
        helper.make_node("Concat", ["score", "score"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "wrong",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor("one", TensorProto.INT64, [1], [1])],
    )
    path = tmp_path / "wrong.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    report = StageReport()
    plain = shape_grid_feeds(CONTRACT, 50)
    check_session_and_shapes(path, CONTRACT, plain, report)  # equal batches: nothing to catch
    shared = plain + [shared_question_feed(CONTRACT, plain)]
    with pytest.raises(ExportError, match="one row fed for all gave logits"):
        check_session_and_shapes(path, CONTRACT, shared, report)
    if importlib.util.find_spec("openvino") is None:
        return
    from pairbert.export.openvino_variants import build_openvino_variants
    from pairbert.export.validation import make_session

    session = make_session(path)  # the graph's own logits as the reference: only the shared row can fail
    reference = np.concatenate([session.run(None, feed)[0] for feed in plain])
    built = build_openvino_variants(
        path, reference, plain, report, ("openvino-fp32",), shared_question=shared[-1]
    )
    assert built == []  # the parity pairs agree, but the runtime would feed it one row: not written
    assert "not written, even with --force" in report.failures["openvino-fp32"]


def test_rerank_ab_compares_the_two_paths(towers_bundle, tiny_bundle, tmp_path, capsys):
    from pairbert.benchmarks.rerank_ab import main as rerank_ab

    out = tmp_path / "rerank.json"
    rerank_ab(
        [str(towers_bundle), "--variant", "optimized", "--texts", "5", "--queries", "3"]
        + ["--rounds", "2", "--threads", "1", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    assert result["queries"] == 3 and result["texts"] == 5
    assert all(len(ms) == 2 for ms in result["rounds_ms"].values())
    assert result["max_abs_prob_diff"] < 1e-5
    assert len(set(result["true_answer_first"].values())) == 1  # the same ranking either way
    assert "5 texts a query" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="feeds every pair's question"):
        rerank_ab([str(tiny_bundle), "--variant", "optimized", "--texts", "5", "--queries", "1"])


def test_the_servers_warm_up_runs_both_branches_at_full_batches(towers_bundle):
    """Warm-up takes the largest shapes before /ready; its runs' questions differ, so the question's branch
    runs them at full batch too (not once for all)."""
    pytest.importorskip("starlette", reason="needs pairbert[serve]")
    from pairbert.serving.app import warm_up

    with PairClassifier.load(towers_bundle, variant="optimized") as clf:
        feeds = Feeds(clf)
        warm_up(clf)
    budget_runs = feeds.shapes[4:]  # after the single pair, the batch, the long pairs
    assert all(qa == aq for qa, aq in budget_runs) and max(aq for _, aq in budget_runs) >= 8


def test_export_checks_every_backend_with_one_question_row(towers_bundle, tiny_checkpoint):
    """The towers export's shape grid ends with one question row for several answers; a cross export's
    does not. OpenVINO variants are checked on it too."""
    from pairbert.export.bundle_writer import ExportSettings, _prepare

    ckpt = towers_bundle.parent / "run" / "last"
    grid = _prepare(ckpt, ExportSettings(), None).grid
    assert [(len(f["qa_input_ids"]), len(f["aq_input_ids"])) for f in grid][-1] == (1, 7)
    assert all(len({len(v) for v in f.values()}) == 1 for f in grid[:-1])
    cross = _prepare(tiny_checkpoint, ExportSettings(), None).grid  # whole pairs: no shared row
    assert all(len({len(v) for v in f.values()}) == 1 for f in cross)


def test_a_served_rerank_scores_like_predict_on_the_same_pairs(towers_bundle):
    """Over HTTP: /rerank (its query fed once) answers what /predict answers for the same pairs, and a
    /predict run mixing a question asked by ten pairs with others keeps every pair's own answer."""
    pytest.importorskip("starlette", reason="needs pairbert[serve]")
    from test_serving import call

    from pairbert.benchmarks.serve_load import ServerProcess

    texts = _texts(10)
    pairs = [[QUESTION, t] for t in texts] + [["who wrote hamlet", t] for t in texts[:3]]
    with PairClassifier.load(towers_bundle, variant="optimized", threads=1) as clf:
        clf.question_once = False
        every = clf.predict([tuple(p) for p in pairs]).match_probability
    proc = ServerProcess(str(towers_bundle), "--variant", "optimized")
    try:
        status, _, ranked = call(proc.port, "POST", "/rerank", {"query": QUESTION, "texts": texts})
        assert status == 200
        np.testing.assert_allclose(
            [r["score"] for r in sorted(ranked, key=lambda r: r["index"])], every[:10], atol=1e-5
        )
        status, _, body = call(proc.port, "POST", "/predict", {"pairs": pairs})
        assert status == 200
        np.testing.assert_allclose(body["match_probability"], every, atol=1e-5)
    finally:
        assert proc.stop() == 0, proc.errors()


def test_threshold_benchmark_times_both_paths(towers_bundle, capsys, monkeypatch):
    """benchmarks/shared_question_threshold.py (which set the thresholds) runs on a bundle and reports both
    paths for each group size: every run of the grouped path feeds one question row, every run of the other
    feeds every row."""
    from pairbert.benchmarks import shared_question_threshold

    runs: list[tuple[bool, int, int]] = []
    real_run = PairClassifier._run

    def spy(self, feed):
        runs.append((self.question_once, len(feed["qa_input_ids"]), len(feed["aq_input_ids"])))
        return real_run(self, feed)

    monkeypatch.setattr(PairClassifier, "_run", spy)
    argv = [str(towers_bundle), "--variant", "optimized", "--texts", "3", "4", "--rounds", "1"]
    shared_question_threshold.main(argv)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["variant"] == "optimized" and report["threshold"] == 4
    assert report["3 texts a question"]["pairs_a_call"] == 48
    assert report["4 texts a question"]["pairs_a_call"] == 32
    for k in (3, 4):
        timing = report[f"{k} texts a question"]
        assert timing["grouped_ms"] > 0 and timing["every_row_ms"] > 0 and timing["ratio"] > 0
    grouped = [(qa, aq) for once, qa, aq in runs if once]
    every = [(qa, aq) for once, qa, aq in runs if not once]
    assert grouped and all(qa == 1 for qa, _ in grouped)  # k = 3 too: the threshold follows k
    assert every and all(qa == aq for qa, aq in every)


def test_cuda_keeps_the_larger_threshold():
    """4 was measured for ONNX Runtime on the CPU only: CUDA (and OpenVINO) keep 8."""
    from pairbert.runtime.predictor import shared_question_pairs

    assert shared_question_pairs("onnxruntime", "cpu") == 4
    assert shared_question_pairs("onnxruntime", "cuda") == 8
    assert shared_question_pairs("openvino", "cpu") == 8


def test_tokenizing_benchmark_compares_the_two_ways(towers_bundle, capsys):
    """benchmarks/tokenizing.py (the README's figures for encoding texts alone) runs on a towers bundle."""
    from pairbert.benchmarks import tokenizing

    out = tokenizing.main([str(towers_bundle), "--rounds", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert set(out) == {"texts alone", "pairs in both orders"}
    assert all(
        v["1000_pairs_ms"] > 0 and v["1000_cut_pairs_ms"] > 0 and v["short_pair_us"] > 0 for v in out.values()
    )
