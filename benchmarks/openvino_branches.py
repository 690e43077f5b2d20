"""Both branches at once on OpenVINO: the bundle's fp32 graph cut at the head's input into a QA model, an AQ
model and the head, the two branches run as two asynchronous requests of one thread each, against the whole
graph on two threads (bf16 hint, model only, the short validation pair and 32 validation pairs, 4 rounds):

    taskset -c 0,1 python -m pairbert.benchmarks.openvino_branches bundles/default
"""

import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov
from openvino import opset13 as ops

from pairbert.benchmarks.turns import in_turns
from pairbert.builtin_data import DATA_DIR
from pairbert.runtime.bundle import bundle_encoder, read_manifest


def main(bundle: Path) -> None:
    enc = bundle_encoder(bundle, read_manifest(bundle))
    f1 = enc.collate(*enc.tokenize(["How long should I boil an egg for a soft yolk?"], ["Six minutes."]))
    rows = [json.loads(line) for line in open(DATA_DIR / "validation.jsonl")][:32]
    f32 = enc.collate(*enc.tokenize([r["question"] for r in rows], [r["answer"] for r in rows]))
    core = ov.Core()
    full = core.read_model(str(bundle / "model.fp32.onnx"))
    mul = (
        [op for op in full.get_ordered_ops() if op.get_type_name() == "MatMul"][-1].input_value(0).get_node()
    )
    params = {p.get_friendly_name(): p for p in full.get_parameters()}
    qa_m = ov.Model([mul.input_value(0)], [params[n] for n in params if n.startswith("qa_")], "qa")
    aq_m = ov.Model([mul.input_value(1)], [params[n] for n in params if n.startswith("aq_")], "aq")
    head = full.clone()
    hmul = [op for op in head.get_ordered_ops() if op.get_friendly_name() == mul.get_friendly_name()][0]
    width = mul.get_output_partial_shape(0)[1].get_length()
    pu = ops.parameter([-1, width], np.float32, name="u")
    pv = ops.parameter([-1, width], np.float32, name="v")
    hmul.input(0).replace_source_output(pu.output(0))
    hmul.input(1).replace_source_output(pv.output(0))
    head_m = ov.Model(head.get_results(), [pu, pv], "head")

    def cfg(threads, pin):
        return {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "bf16",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "ENABLE_CPU_PINNING": pin,
        }

    whole = core.compile_model(full, "CPU", cfg(2, True)).create_infer_request()
    names = [p.get_friendly_name() for p in full.get_parameters()]

    def run_whole(f):
        whole.infer({k: f[k] for k in names}, share_inputs=True)
        return whole.get_output_tensor(0).data.copy()

    runs = {"whole graph, 2 threads": run_whole}
    for pin in (True, False):
        qa, aq, hd = (core.compile_model(m, "CPU", cfg(1, pin)) for m in (qa_m, aq_m, head_m))
        qr, ar, hr = qa.create_infer_request(), aq.create_infer_request(), hd.create_infer_request()
        qn, an = [p.get_any_name() for p in qa.inputs], [p.get_any_name() for p in aq.inputs]

        def run_split(f, qr=qr, ar=ar, hr=hr, qn=qn, an=an):
            qr.start_async({k: f[k] for k in qn}, share_inputs=True)
            ar.start_async({k: f[k] for k in an}, share_inputs=True)
            qr.wait()
            ar.wait()
            hr.infer([qr.get_output_tensor(0).data, ar.get_output_tensor(0).data], share_inputs=True)
            return hr.get_output_tensor(0).data.copy()

        runs[f"branches as two 1-thread requests, pinning {pin}"] = run_split
    print("max |dlogit| against the whole graph (32 pairs):")
    print({k: float(np.abs(v(f32) - run_whole(f32)).max()) for k, v in runs.items()})
    timed = in_turns(runs, {"b1 ms": (f1, 200), "b32 ms": (f32, 10)}, warmup=20)
    res = {k: {feed: [round(ms, 3) for ms in v] for feed, v in r.items()} for k, r in timed.items()}
    for k, r in res.items():
        print(k, r)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
