"""A probe for a machine without the checkpoint (the lent device's CPU): pairbert's OpenVINO session settings
against OpenVINO's defaults, and whether a bf16 model imported from OpenVINO's compiled-model cache answers
like a fresh compile. It needs only the checkpoint's config.json, pairbert.json and tokenizer.json (in
`cfg/` beside a copy of this file): the weights are random, the logits spread by a scaled head.

    python openvino_probe.py make CKPT              # random checkpoint of the default's shape
    pairbert export CKPT --out B --variants fp32,openvino-bf16 --force
    taskset -c 0,1 python openvino_probe.py config B  # b1 and 32x128 medians per setting, 4 rounds
    python openvino_probe.py cold B                 # import + load + first prediction, no cache, 3 processes
    python openvino_probe.py cache B                # no cache, then cache write, 3 imports, no cache again
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def make(out):
    import torch

    from pairbert.training.model import DualOrderBertConfig, DualOrderBertForPairClassification

    torch.manual_seed(0)
    cfg = DualOrderBertConfig.from_json_file(str(HERE / "cfg" / "config.json"))
    model = DualOrderBertForPairClassification(cfg)
    with torch.no_grad():  # spread the logits so labels are not all near 0.5
        model.classifier.weight.mul_(20000)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for f in ("pairbert.json", "tokenizer.json"):
        (out / f).write_bytes((HERE / "cfg" / f).read_bytes())


def feeds(bundle):
    from pairbert.runtime.bundle import bundle_encoder, read_manifest

    enc = bundle_encoder(Path(bundle), read_manifest(bundle))
    short = enc.collate(*enc.tokenize(["How long should I boil an egg for a soft yolk?"], ["Six minutes."]))
    words = "the quick brown fox jumps over a lazy dog while seven cats watch from the old wall".split()
    longq = [" ".join(words[(i + j) % len(words)] for j in range(60)) + "?" for i in range(32)]
    longa = [" ".join(words[(i + 3 * j) % len(words)] for j in range(70)) for i in range(32)]
    long = enc.collate(*enc.tokenize(longq, longa))
    rng = np.random.default_rng(0)
    varied = []
    for _ in range(60):
        n = int(rng.integers(1, 33))
        lq = int(rng.integers(3, 60))
        la = int(rng.integers(3, 60))
        qs = [" ".join(words[int(k)] for k in rng.integers(0, len(words), lq)) for _ in range(n)]
        as_ = [" ".join(words[int(k)] for k in rng.integers(0, len(words), la)) for _ in range(n)]
        varied.append(enc.collate(*enc.tokenize(qs, as_)))
    return short, long, varied


PB = {
    "INFERENCE_NUM_THREADS": 2,
    "INFERENCE_PRECISION_HINT": "bf16",
    "PERFORMANCE_HINT": "LATENCY",
    "NUM_STREAMS": "1",
    "CPU_RUNTIME_CACHE_CAPACITY": 1000,
}
CONFIGS = {
    "ov-default": {"INFERENCE_NUM_THREADS": 2},
    "pairbert": PB,
    "pb-no-hint-streams": {k: v for k, v in PB.items() if k not in ("PERFORMANCE_HINT", "NUM_STREAMS")},
    "pb-no-rtcache": {k: v for k, v in PB.items() if k != "CPU_RUNTIME_CACHE_CAPACITY"},
    "default+bf16": {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "bf16"},
}
PROPS = (
    "PERFORMANCE_HINT",
    "NUM_STREAMS",
    "INFERENCE_NUM_THREADS",
    "INFERENCE_PRECISION_HINT",
    "ENABLE_CPU_PINNING",
    "SCHEDULING_CORE_TYPE",
    "ENABLE_HYPER_THREADING",
    "CPU_DENORMALS_OPTIMIZATION",
    "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE",
    "EXECUTION_MODE_HINT",
    "CPU_RUNTIME_CACHE_CAPACITY",
    "ENABLE_CPU_RESERVATION",
    "MODEL_DISTRIBUTION_POLICY",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE",
    "KEY_CACHE_PRECISION",
    "PERFORMANCE_HINT_NUM_REQUESTS",
)


def config(bundle):
    import openvino as ov

    from pairbert.runtime.sessions import SessionSettings, open_session

    path = str(Path(bundle) / "model.fp32.onnx")
    short, long, _ = feeds(bundle)
    core = ov.Core()
    runs = {}
    for name, cfg in CONFIGS.items():
        t = time.perf_counter()
        c = core.compile_model(path, "CPU", cfg)
        dt = time.perf_counter() - t
        props = {}
        for p in PROPS:
            try:
                props[p] = str(c.get_property(p))
            except Exception:
                pass
        print(name, f"compile {dt:.2f}s", json.dumps(props), flush=True)
        req = c.create_infer_request()
        names = [p.get_any_name() for p in c.inputs]
        runs[name] = lambda f, req=req, names=names: req.infer({k: f[k] for k in names})
    s = open_session("openvino", path, SessionSettings(threads=2, precision="bf16"))
    runs["pairbert-session"] = s.run
    from pairbert.runtime import PairClassifier
    from pairbert.runtime.bundle import bundle_encoder, read_manifest

    clf = PairClassifier.load(bundle, variant="openvino-bf16", threads=2)
    enc = bundle_encoder(Path(bundle), read_manifest(bundle))
    words = "the quick brown fox jumps over a lazy dog while seven cats watch from the old wall".split()
    P1 = [("How long should I boil an egg for a soft yolk?", "Six minutes.")]
    P32 = [
        (
            " ".join(words[(i + j) % 16] for j in range(60)) + "?",
            " ".join(words[(i + 3 * j) % 16] for j in range(70)),
        )
        for i in range(32)
    ]
    dreq = core.compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": 2}).create_infer_request()

    def ov_e2e(f):
        pairs = P1 if f is short else P32
        feed = enc.collate(*enc.tokenize([p[0] for p in pairs], [p[1] for p in pairs]))
        dreq.infer(feed)
        return dreq.get_output_tensor(0).data

    runs["ov-default-e2e"] = ov_e2e
    runs["pairbert-predict"] = lambda f: clf.predict(P1 if f is short else P32, batch_size=32)
    from pairbert.benchmarks.turns import in_turns

    res = in_turns(runs, {"b1": (short, 40), "long": (long, 4)})
    for name, r in res.items():
        print(
            f"{name:20s} b1 ms {[round(x, 2) for x in r['b1']]}  32x128 ms {[round(x, 1) for x in r['long']]}"
        )


def cache_child(bundle, cache, ref):
    from pairbert.runtime.sessions import SessionSettings, open_session

    path = str(Path(bundle) / "model.fp32.onnx")
    _, _, varied = feeds(bundle)
    t = time.perf_counter()
    s = open_session("openvino", path, SessionSettings(threads=2, precision="bf16", cache_dir=cache or None))
    s.run(varied[0])
    dt = time.perf_counter() - t
    outs = [s.run(f) for f in varied]
    drift = 0.0
    for _ in range(2):  # again, to catch answers that change from call to call
        again = [s.run(f) for f in varied]
        drift = max(drift, *(float(np.abs(a - b).max()) for a, b in zip(outs, again, strict=True)))
    flat = np.concatenate(outs)
    if ref == "write":
        np.save(str(Path(bundle) / "ref.npy"), flat)
        print(f"reference (no cache) load+first {dt:.2f}s")
        return
    r = np.load(str(Path(bundle) / "ref.npy"))
    fp = np.concatenate(outs)
    agree = float(((fp[:, 1] > fp[:, 0]) == (r[:, 1] > r[:, 0])).mean())
    print(
        f"{ref}: load+first {dt:.2f}s; vs compiled-no-cache max|dlogit| {np.abs(fp - r).max():.4g} "
        f"(logit std {r.std():.3g}), "
        f"labels agree {100 * agree:.2f}% of {len(r)}, call-to-call drift {drift:.3g}, "
        f"cache files {sorted(os.listdir(cache)) if cache else '-'}",
        flush=True,
    )


def cold(bundle):
    code = (
        "import time; t=time.perf_counter(); from pairbert.runtime import PairClassifier; "
        f"c=PairClassifier.load('{bundle}', variant='openvino-bf16', threads=2); "
        "c.predict([('a b c?', 'd e')]); "
        "print(round(time.perf_counter()-t, 3))"
    )
    for _i in range(3):
        with tempfile.TemporaryDirectory() as empty:  # no compiled-model cache: bf16 compiles each time
            p = subprocess.run(
                ["taskset", "-c", "0,1", sys.executable, "-c", code],
                capture_output=True,
                text=True,
                env={**os.environ, "PAIRBERT_CACHE_DIR": empty},
            )
        print(
            "cold start openvino-bf16 (import+load+first, no cache):",
            p.stdout.strip(),
            p.stderr[-300:],
            flush=True,
        )


def cache(bundle):
    c = "/tmp/ovcache"
    os.makedirs(c, exist_ok=True)
    me = [sys.executable, __file__, "cache_child", bundle]
    for args in (
        ["", "write"],
        [c, "cache-write"],
        [c, "cache-import-1"],
        [c, "cache-import-2"],
        [c, "cache-import-3"],
        ["", "no-cache-again"],
    ):
        p = subprocess.run(["taskset", "-c", "0,1", *me, *args], capture_output=True, text=True, timeout=120)
        print(
            f"[{args[1]}] exit {p.returncode}",
            p.stdout.strip(),
            p.stderr.strip()[-400:] if p.returncode else "",
            flush=True,
        )


if __name__ == "__main__":
    {"make": make, "cold": cold, "config": config, "cache": cache, "cache_child": cache_child}[sys.argv[1]](
        *sys.argv[2:]
    )
