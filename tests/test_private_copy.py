"""A bundle's weight files reach the backends as private copies (runtime/external_weights.py): copied by the
kernel into a 0700 temporary folder, hashed as they are copied, mapped by ONNX Runtime, the folder removed
once the session is built; without room for the folder, the files are read into memory instead."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import varied_pairs

from pairbert.runtime import PairClassifier, external_weights
from pairbert.runtime.external_weights import CopyFailed, PrivateCopy


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    """TMPDIR for this test: a folder it can list afterwards."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def copied_and_hashed(sources: dict[str, Path]) -> tuple[PrivateCopy, dict[str, str]]:
    """Copy while another thread hashes the copies as they grow (as the loader does)."""
    copy = PrivateCopy(sources)
    with ThreadPoolExecutor(max_workers=1) as pool:
        digests = {name: pool.submit(copy.sha256, name) for name in sources}
        copy.copy()
        return copy, {name: future.result(timeout=30) for name, future in digests.items()}


@pytest.mark.parametrize("kernel", [True, False], ids=["sendfile", "buffered"])
def test_the_copy_is_byte_equal_and_hashed_as_it_grows(tmp_path, temp_root, monkeypatch, kernel):
    monkeypatch.setattr(PrivateCopy, "CHUNK", 1000)  # many chunks: the hashing follows the copy
    if not kernel:  # where sendfile cannot copy file to file (macOS), a buffer does

        def no_file_sendfile(*args):
            raise OSError(errno.ENOTSOCK, "not a socket")

        monkeypatch.setattr(os, "sendfile", no_file_sendfile)
    files = {"a.data": os.urandom(25_001), "b.data": b"", "c.data": os.urandom(999)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    copy, digests = copied_and_hashed({name: tmp_path / name for name in files})
    assert copy.folder.parent == temp_root and (copy.folder.stat().st_mode & 0o777) == 0o700
    for name, data in files.items():
        assert (copy.folder / name).read_bytes() == data
        assert (copy.folder / name).stat().st_mode & 0o777 == 0o600
        assert digests[name] == hashlib.sha256(data).hexdigest()
    copy.remove()
    assert list(temp_root.iterdir()) == []


def test_a_failed_copy_fails_its_hashing_too_and_leaves_nothing(tmp_path, temp_root):
    (tmp_path / "a.data").write_bytes(b"x" * 100)
    copy = PrivateCopy({"a.data": tmp_path / "a.data", "b.data": tmp_path / "missing.data"})
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(copy.sha256, "b.data")
        with pytest.raises(CopyFailed, match="missing.data"):
            copy.copy()
        with pytest.raises(CopyFailed):  # the hashing thread is told, not left waiting
            hashing.result(timeout=30)
    copy.remove()
    assert list(temp_root.iterdir()) == []
    with pytest.raises(external_weights.ExternalWeightsError, match="not a plain file name"):
        PrivateCopy({"../a.data": tmp_path / "a.data"})


@pytest.mark.parametrize("variant", ["fp32", "openvino-fp32"])
def test_a_loaded_session_maps_only_its_private_copy_and_ignores_the_bundle_changing(
    tiny_bundle, tmp_path, temp_root, variant
):
    """Once loaded, rewriting the bundle's weight file in place (same inode) changes nothing: the session
    holds a private copy whose folder is already gone from TMPDIR. OpenVINO maps its copy too (on POSIX;
    reading it in was what the wrong AMX loads had); neither ever maps the bundle's own file."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(12, seed=5)]
    clf = PairClassifier.load(bundle, variant=variant, threads=1)
    before = clf.predict(pairs).probabilities
    assert list(temp_root.iterdir()) == []  # the folder was removed once the session was built
    weights = bundle / "model.fp32.onnx.data"
    with open(weights, "r+b") as f:  # in place: a mapping of this file would see it
        f.write(bytes(weights.stat().st_size))
    assert np.array_equal(clf.predict(pairs).probabilities, before)
    if Path(
        "/proc/self/maps"
    ).exists():  # Linux: ONNX Runtime maps the copy, unnamed, never the bundle's file
        maps = Path("/proc/self/maps").read_text().splitlines()
        copies = [line for line in maps if external_weights.COPY_PREFIX in line]
        # (OpenVINO's compiled-model cache, on in these tests, hands it the weights in its blob instead)
        assert (copies or variant.startswith("openvino")) and all(
            line.endswith("(deleted)") for line in copies
        )
        assert not any(str(weights) in line for line in maps)
    clf.close()


def test_without_room_for_a_copy_the_weights_are_read_into_memory(tiny_bundle, tmp_path, monkeypatch, caplog):
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(12, seed=6)]
    expected = PairClassifier.load(tiny_bundle, variant="fp32", threads=1).predict(pairs).probabilities
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    with caplog.at_level(logging.INFO, logger="pairbert.runtime.predictor"):
        got = PairClassifier.load(tiny_bundle, variant="fp32", threads=1).predict(pairs).probabilities
    assert np.array_equal(got, expected)
    assert "reading them into memory" in caplog.text


def fail_after_one_chunk(monkeypatch, error: BaseException) -> list[int]:
    """Copies of 4 KiB chunks; the second one raises `error`. The offsets asked for, as the copy goes."""
    monkeypatch.setattr(PrivateCopy, "CHUNK", 4096)
    real, calls = external_weights._copy_range, []

    def failing(src, dst, offset, count):
        calls.append(offset)
        if len(calls) > 1:
            raise error
        return real(src, dst, offset, count)

    monkeypatch.setattr(external_weights, "_copy_range", failing)
    return calls


def test_a_copy_that_fails_halfway_falls_back_to_memory_and_leaves_nothing(
    tiny_bundle, temp_root, monkeypatch, caplog
):
    """A disk that fills up during the copy: the load reads the weights into memory instead."""
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(12, seed=7)]
    expected = PairClassifier.load(tiny_bundle, variant="fp32", threads=1).predict(pairs).probabilities
    calls = fail_after_one_chunk(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with caplog.at_level(logging.INFO, logger="pairbert.runtime.predictor"):
        got = PairClassifier.load(tiny_bundle, variant="fp32", threads=1).predict(pairs).probabilities
    assert len(calls) > 1 and "No space left on device" in caplog.text
    assert "model.fp32.onnx.data -> " in caplog.text  # names the file being copied, and where to
    assert np.array_equal(got, expected)
    assert list(temp_root.iterdir()) == []


def test_a_weight_file_damaged_before_the_copy_fails_the_load(tiny_bundle, tmp_path, temp_root):
    from pairbert.runtime import BundleError

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    weights = bundle / "model.fp32.onnx.data"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.fp32\.onnx\.data: checksum mismatch"):
        PairClassifier.load(bundle, variant="fp32", threads=1)
    assert list(temp_root.iterdir()) == []


def test_openvino_compiles_from_the_private_copy_and_holds_nothing_of_it(tiny_bundle, temp_root):
    """OpenVINO reads the graph and the weights from the private folder (read, not mapped): once compiled,
    nothing of the copy is left on disk or in the process's mappings."""
    pytest.importorskip("openvino")
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(12, seed=8)]
    ort = PairClassifier.load(tiny_bundle, variant="fp32", threads=1).predict(pairs).probabilities
    clf = PairClassifier.load(tiny_bundle, variant="openvino-fp32", threads=1)
    assert clf.backend == "openvino"
    np.testing.assert_allclose(clf.predict(pairs).probabilities, ort, atol=1e-4)
    assert list(temp_root.iterdir()) == []
    if Path("/proc/self/maps").exists():
        maps = Path("/proc/self/maps").read_text().splitlines()
        held = [line for line in maps if external_weights.COPY_PREFIX in line]
        assert not any(external_weights.GRAPH_COPY in line for line in held)
    clf.close()


def mapping_rss_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def linux_at_least(major: int, minor: int) -> bool:
    found = re.match(r"(\d+)\.(\d+)", os.uname().release) if hasattr(os, "uname") else None
    return (
        os.uname().sysname == "Linux"
        and found is not None
        and tuple(map(int, found.groups())) >= (major, minor)
    )


@pytest.mark.skipif(not linux_at_least(5, 14), reason="MADV_POPULATE_READ needs Linux >= 5.14")
def test_settling_makes_the_mapped_copy_resident_even_through_a_linked_tmpdir(tmp_path, monkeypatch):
    """What a backend mapped from the private folder is faulted in at load, so a service's resident memory
    does not creep up as embedding rows are first used. /proc shows resolved paths: a TMPDIR reached
    through a symlink must still be recognised."""
    import mmap

    real = tmp_path / "real-tmp"
    real.mkdir()
    (tmp_path / "linked-tmp").symlink_to(real)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "linked-tmp"))
    (tmp_path / "w.data").write_bytes(os.urandom(64 * 4096))
    copy, _ = copied_and_hashed({"w.data": tmp_path / "w.data"})
    with open(copy.folder / "w.data", "rb") as f:  # as a backend maps it
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    resolved = real / copy.folder.name / "w.data"
    untouched = mapping_rss_kb(resolved)
    assert untouched == 0 and copy.settle() == 64 * 4096
    assert mapping_rss_kb(resolved) == 64 * 4
    mapped.close()
    copy.remove()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux only")
def test_a_copy_replaced_before_the_backend_maps_it_is_refused(tmp_path, temp_root):
    """Between the hashing and the backend opening the copy, someone who can write TMPDIR swaps the file:
    the mapped file is not the copy that was hashed, and the load must not go on."""
    import mmap

    (tmp_path / "w.data").write_bytes(b"good" * 4096)
    copy, digests = copied_and_hashed({"w.data": tmp_path / "w.data"})
    swapped = copy.folder / "w.data"
    swapped.unlink()
    swapped.write_bytes(b"evil" * 4096)  # a new file (inode) under the same name
    with open(swapped, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    with pytest.raises(external_weights.CopyReplaced, match="not the private copy that was hashed"):
        copy.settle()
    mapped.close()
    copy.remove()


def raised_within(seconds: float, call) -> BaseException:
    """What `call()` raised on a worker thread, which must end within `seconds` (a hang fails the test)."""
    import threading

    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - interrupts are what is checked
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert not worker.is_alive(), "hung: a thread was left waiting"
    assert len(raised) == 1
    return raised[0]


def test_an_interrupt_during_the_copy_stops_the_load_without_hanging(tiny_bundle, temp_root, monkeypatch):
    """Ctrl-C (or a handler raising SystemExit) while the weights are copied: the hashing thread is told,
    the interrupt goes on as it is (no fallback that would swallow it), nothing is left in TMPDIR."""
    fail_after_one_chunk(monkeypatch, KeyboardInterrupt())
    assert isinstance(
        raised_within(60, lambda: PairClassifier.load(tiny_bundle, "fp32", threads=1)), KeyboardInterrupt
    )
    assert list(temp_root.iterdir()) == []


def test_onnxruntime_without_the_folder_option_gets_the_weights_from_memory(
    tiny_bundle, temp_root, monkeypatch
):
    """ONNX Runtime before 1.21 ignores the weights-folder option and would map `model.X.onnx.data` from the
    current directory: builds below 1.24 never get a private folder (they get the bytes, or the message to
    upgrade)."""
    import onnxruntime

    from pairbert.runtime import sessions

    assert sessions.weights_folder_supported("onnxruntime") and sessions.weights_folder_supported("openvino")
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(8, seed=9)]
    expected = PairClassifier.load(tiny_bundle, variant="fp32", threads=1).predict(pairs).probabilities
    monkeypatch.setattr(onnxruntime, "__version__", "1.20.1")
    assert not sessions.weights_folder_supported("onnxruntime")
    made = []
    monkeypatch.setattr(PrivateCopy, "__init__", lambda self, sources: made.append(sources))
    got = PairClassifier.load(tiny_bundle, variant="fp32", threads=1).predict(pairs).probabilities
    assert made == [] and np.array_equal(got, expected)


def test_folders_left_by_killed_loads_are_removed_by_the_next_one(tmp_path, temp_root):
    """A load killed between copying and building leaves its folder; the next load removes the ones nobody
    holds locked (whatever pid their name carries: a restarted container's service has the same pid) once
    they are older than STALE_AFTER_S, and nothing else."""
    import time

    old = time.time() - external_weights.STALE_AFTER_S - 60
    prefix = external_weights.COPY_PREFIX

    def left(name: str, age: float | None = old) -> Path:
        folder = temp_root / name
        folder.mkdir()
        (folder / "model.onnx.data").write_bytes(b"w" * 100)
        if age is not None:
            os.utime(folder, (age, age))
        return folder

    (tmp_path / "a.data").write_bytes(b"x")
    live = PrivateCopy({"a.data": tmp_path / "a.data"})  # a load in progress holds its folder's lock
    os.utime(live.folder, (old, old))
    stale = [left(f"{prefix}12345-abc"), left(f"{prefix}{os.getpid()}-same-pid"), left(f"{prefix}²-odd")]
    recent = left(f"{prefix}12345-def", age=None)  # maybe made a moment ago, not locked yet
    unrelated = left("other-12345-jkl")
    copy = PrivateCopy({"a.data": tmp_path / "a.data"})
    assert not any(folder.exists() for folder in stale)
    assert live.folder.exists() and recent.exists() and unrelated.exists() and copy.folder.exists()
    assert copy.folder.name.startswith(f"{prefix}{os.getpid()}-")
    live.remove()
    copy.remove()


def copy_mappings() -> list[str]:
    maps = Path("/proc/self/maps")
    return [line for line in maps.read_text().splitlines() if external_weights.COPY_PREFIX in line]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux only")
def test_a_load_whose_mapped_copy_is_not_the_hashed_one_fails_and_keeps_nothing(
    tiny_bundle, temp_root, monkeypatch
):
    """The loader settles the copy after the build; if the check refuses what was mapped, the session is
    closed (nothing of the copy stays mapped), the folder is gone, and the error says what happened."""
    before = copy_mappings()

    def refuse(self):
        raise external_weights.CopyReplaced(f"{self.folder}/model.fp32.onnx.data: not the private copy")

    monkeypatch.setattr(PrivateCopy, "settle", refuse)
    with pytest.raises(external_weights.CopyReplaced, match="not the private copy"):
        PairClassifier.load(tiny_bundle, variant="fp32", threads=1)
    assert copy_mappings() == before and list(temp_root.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux only")
def test_hashing_that_fails_after_the_build_closes_that_session_and_reads_into_memory(
    tiny_bundle, temp_root, monkeypatch, caplog
):
    pairs = [(r["question"], r["answer"]) for r in varied_pairs(8, seed=10)]
    expected = PairClassifier.load(tiny_bundle, variant="fp32", threads=1).predict(pairs).probabilities
    before = copy_mappings()

    def unreadable(self, name):
        raise CopyFailed(f"{self.folder / name}: Too many open files")

    monkeypatch.setattr(PrivateCopy, "sha256", unreadable)
    with caplog.at_level(logging.INFO, logger="pairbert.runtime.predictor"):
        got = PairClassifier.load(tiny_bundle, variant="fp32", threads=1).predict(pairs).probabilities
    assert np.array_equal(got, expected) and "Too many open files" in caplog.text
    assert copy_mappings() == before  # the session built on the copy was closed
    assert list(temp_root.iterdir()) == []


def test_an_interrupt_before_the_copy_starts_does_not_hang_the_hashing(tmp_path, temp_root):
    """Interrupted after the hashing thread started but before the copy ran: `abandon` releases it."""

    from pairbert.runtime.predictor import _build_checked

    (tmp_path / "a.data").write_bytes(b"x" * 1000)
    copy = PrivateCopy({"a.data": tmp_path / "a.data"})

    def interrupted_source():
        raise KeyboardInterrupt

    digests = lambda: [copy.sha256("a.data")]  # noqa: E731
    build = lambda: _build_checked(interrupted_source, digests, "fp32", None, stop=copy.abandon)  # noqa: E731
    assert isinstance(raised_within(60, build), KeyboardInterrupt)
    copy.remove()
    assert list(temp_root.iterdir()) == []


def test_a_tmpdir_others_can_write_without_the_sticky_bit_gets_no_copy(tmp_path, monkeypatch):
    """Others could rename the folder away and put theirs in its place: the weights are read into memory."""
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    (tmp_path / "a.data").write_bytes(b"x")
    shared.chmod(0o777)
    with pytest.raises(CopyFailed, match="writable by others without the sticky bit"):
        PrivateCopy({"a.data": tmp_path / "a.data"})
    shared.chmod(0o1777)  # like /tmp
    copy = PrivateCopy({"a.data": tmp_path / "a.data"})
    copy.remove()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux only")
def test_settling_survives_a_mapped_file_whose_name_is_not_utf8(tmp_path, temp_root):
    import mmap

    odd = os.path.join(os.fsencode(tmp_path), b"odd-\xff.bin")
    with open(odd, "wb") as f:
        f.write(b"x" * 4096)
    with open(odd, "rb") as f:
        other = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    (tmp_path / "a.data").write_bytes(b"y" * 4096)
    copy, _ = copied_and_hashed({"a.data": tmp_path / "a.data"})
    assert copy.settle() == 0  # nothing of the folder is mapped; the odd name is skipped, not a crash
    other.close()
    copy.remove()
