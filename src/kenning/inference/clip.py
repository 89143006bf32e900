"""Image-text embeddings (CLIP family) on onnxruntime, from a folder in Immich's layout.

A user points ``clip_model_dir`` at a model exported the way Immich's machine-learning
service exports its CLIP models (e.g. ``ViT-B-32__openai``)::

    <model>/config.json                 open_clip model config: embed_dim,
                                        text_cfg.context_length (default 77)
    <model>/visual/model.onnx           image tensor [N, 3, S, S] float32 -> [N, D]
    <model>/visual/preprocess_cfg.json  size, mean, std, interpolation, resize_mode
    <model>/textual/model.onnx          token ids [N, L] int32/int64 -> [N, D]
                                        (or ``input_ids`` + ``attention_mask``: M-CLIP)
    <model>/textual/tokenizer.json      a Hugging Face ``tokenizers`` file
    <model>/textual/tokenizer_config.json  pad_token

Images are resized and cropped as open_clip's ``resize_mode`` says (``shortest``: the
short side to S, then a centre crop; ``squash``: straight to S x S; ``longest``: the
long side to S, centred on a black square), scaled to [0, 1] and normalised by the
configured mean and std. Both towers' outputs are L2-normalised, so cosine is a dot
product; they live in their own embedding space, ``clip:<folder name>``, never mixed
with the text model's.

Sessions load lazily, under a lock, on first use, with one intra-op thread per model
(``model_threads``) like the project's other models. Immich exports with a fixed batch
of one; such a graph is run item by item, a graph with a dynamic batch axis gets up to
``max_batch`` items a call.

No CLIP weights ship offline: this code is tested on a tiny model the tests build and
save in this layout (random weights, the same tensor interface). Those tests prove
loading and plumbing, not retrieval quality.
"""

from __future__ import annotations

import json
import string
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from kenning.errors import KenningError, MissingExtra
from kenning.settings import Settings

__all__ = [
    "CLIP_EXTRA",
    "REQUIRED_FILES",
    "ClipModel",
    "ClipPreprocess",
    "ImageTextBackend",
    "clip_model",
    "clip_space",
    "preprocess_image",
]

CLIP_EXTRA = "clip"
"""The extra that brings image-text embeddings: ``pip install 'kenning[clip]'``."""

REQUIRED_FILES = (
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
    "textual/tokenizer_config.json",
)
"""What a model folder must hold, relative to it."""

_RESIZE_MODES = ("shortest", "squash", "longest")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@runtime_checkable
class ImageTextBackend(Protocol):
    """An image-text model runtime: images and texts into one space of unit vectors.

    Its text side is also an :class:`~kenning.inference.embedding.EmbeddingBackend`
    (``embed``), so it meets the same contract as the text models."""

    model_id: str
    """Stable id; also the embedding space name (``clip:<name>``)."""
    dim: int

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed images into an (n, dim) float32 array of unit vectors."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into the same space, an (n, dim) float32 array of unit vectors."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Same as :meth:`encode_texts` (the text-embedding protocol)."""
        ...


def clip_space(name: str) -> str:
    """The embedding space of the CLIP model named ``name`` (its folder's name)."""
    return f"clip:{name}"


@dataclass(frozen=True)
class ClipPreprocess:
    """How an image becomes the visual tower's input (``visual/preprocess_cfg.json``)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Image.Resampling
    resize_mode: str

    @classmethod
    def from_json(cls, cfg: dict[str, Any], where: Path) -> ClipPreprocess:
        try:
            size = cfg["size"]
            size = int(size[0] if isinstance(size, list) else size)
            mean = tuple(float(v) for v in cfg["mean"])
            std = tuple(float(v) for v in cfg["std"])
            name = str(cfg.get("interpolation", "bicubic")).lower()
            mode = str(cfg.get("resize_mode", "shortest"))  # open_clip's default
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _invalid(f"{where}: needs size, mean and std ({exc!r})") from exc
        resampling = {r.name.lower(): r for r in Image.Resampling}.get(name)
        if resampling is None:
            raise _invalid(f"{where}: unknown interpolation {name!r}")
        if mode not in _RESIZE_MODES:
            raise _invalid(f"{where}: unsupported resize_mode {mode!r}; use one of "
                           f"{', '.join(_RESIZE_MODES)}")
        if size < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise _invalid(f"{where}: size must be positive, mean and std three numbers "
                           "each (std above 0)")
        return cls(size, mean, std, resampling, mode)


def preprocess_image(image: Image.Image, cfg: ClipPreprocess) -> np.ndarray:
    """``image`` as the visual tower's input: a float32 [3, size, size] array."""
    rgb = _rgb(image)
    s = cfg.size
    if cfg.resize_mode == "squash":
        rgb = rgb.resize((s, s), resample=cfg.interpolation)
    elif cfg.resize_mode == "shortest":
        scale = s / min(rgb.size)
        w, h = max(s, round(rgb.width * scale)), max(s, round(rgb.height * scale))
        rgb = rgb.resize((w, h), resample=cfg.interpolation)
        left, top = (w - s) // 2, (h - s) // 2
        rgb = rgb.crop((left, top, left + s, top + s))
    else:  # longest: the whole picture, centred on a black square
        scale = s / max(rgb.size)
        w, h = max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))
        canvas = Image.new("RGB", (s, s))
        canvas.paste(rgb.resize((w, h), resample=cfg.interpolation), ((s - w) // 2,
                                                                       (s - h) // 2))
        rgb = canvas
    pixels = np.asarray(rgb, dtype=np.float32) / 255.0
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    out: np.ndarray = ((pixels - mean) / std).transpose(2, 0, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def _rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparency over white (as a viewer shows it), not over black."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    out: np.ndarray = rows / np.maximum(norms, 1e-12)
    return out


def _invalid(message: str) -> KenningError:
    return KenningError(f"CLIP model: {message}", code="model_unavailable")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(f"{path} does not read as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _invalid(f"{path} must hold a JSON object")
    return data


@dataclass
class _Loaded:
    visual: Any
    textual: Any
    tokenizer: Any
    image_input: str
    image_batch: int | None
    text_inputs: tuple[str, str | None]
    """The ids input and, for M-CLIP style graphs, the attention-mask input."""
    text_dtype: type[np.integer[Any]]
    text_batch: int | None


class ClipModel:
    """A CLIP-family model (two ONNX towers and a tokenizer) from one folder.

    The folder is checked when the model is built (every file there, the JSON configs
    readable); the ONNX sessions and the tokenizer load on first use.
    """

    def __init__(self, folder: Path | str, *, threads: int = 1, max_batch: int = 16) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise _invalid(f"{self.folder} is not a folder (clip_model_dir)")
        missing = [f for f in REQUIRED_FILES if not (self.folder / f).is_file()]
        if missing:
            raise _invalid(f"{self.folder} is missing {', '.join(missing)} (the layout of "
                           "Immich's CLIP exports: config.json, visual/ and textual/)")
        self.name = self.folder.resolve().name
        self.model_id = clip_space(self.name)
        """Stable id; also the embedding space, so two models' vectors never mix."""
        config = _read_json(self.folder / "config.json")
        text_cfg = config.get("text_cfg") or {}
        self.context_length = int(text_cfg.get("context_length", 77))
        kwargs = text_cfg.get("tokenizer_kwargs") or {}
        self._canonicalize = isinstance(kwargs, dict) and kwargs.get("clean") == "canonicalize"
        self.dim = int(config.get("embed_dim", 0))
        """Vector size (``embed_dim``; read from the graphs when the config lacks it)."""
        self.preprocess = ClipPreprocess.from_json(
            _read_json(self.folder / "visual/preprocess_cfg.json"),
            self.folder / "visual/preprocess_cfg.json")
        pad = _read_json(self.folder / "textual/tokenizer_config.json").get("pad_token")
        if isinstance(pad, dict):  # an AddedToken written out by transformers
            pad = pad.get("content")
        if not isinstance(pad, str) or not pad:
            raise _invalid(f"{self.folder / 'textual/tokenizer_config.json'} names no pad_token")
        self._pad_token = pad
        self._threads = max(1, threads)
        self._max_batch = max(1, max_batch)
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    # --- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Build the sessions and the tokenizer now (otherwise done on first use)."""
        self._get()

    def _get(self) -> _Loaded:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def _load(self) -> _Loaded:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingExtra("onnxruntime", CLIP_EXTRA) from exc
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingExtra("tokenizers", CLIP_EXTRA) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        sessions = []
        for tower in ("visual", "textual"):
            path = self.folder / tower / "model.onnx"
            try:
                sessions.append(ort.InferenceSession(
                    str(path), sess_options=options, providers=["CPUExecutionProvider"]))
            except Exception as exc:  # onnxruntime raises its own, untyped errors
                raise _invalid(f"{path} does not load: {exc}") from exc
        visual, textual = sessions
        tokenizer = Tokenizer.from_file(str(self.folder / "textual/tokenizer.json"))
        pad_id = tokenizer.token_to_id(self._pad_token)
        if pad_id is None:
            raise _invalid(f"pad_token {self._pad_token!r} is not in textual/tokenizer.json")
        tokenizer.enable_padding(length=self.context_length, pad_id=pad_id,
                                 pad_token=self._pad_token)
        tokenizer.enable_truncation(max_length=self.context_length)
        image_in = visual.get_inputs()[0]
        names = {i.name: i for i in textual.get_inputs()}
        ids = names.get("input_ids") or textual.get_inputs()[0]
        mask = "attention_mask" if "attention_mask" in names else None
        dtype = np.int32 if ids.type == "tensor(int32)" else np.int64
        dims = [_fixed(o.shape[-1]) for o in (visual.get_outputs()[0],
                                              textual.get_outputs()[0])]
        known = {d for d in (*dims, self.dim or None) if d}
        if len(known) > 1:
            raise _invalid(f"{self.folder}: the towers' output sizes differ "
                           f"({', '.join(map(str, sorted(known)))})")
        if known:
            self.dim = known.pop()
        return _Loaded(visual, textual, tokenizer, image_in.name, _fixed(image_in.shape[0]),
                       (ids.name, mask), dtype, _fixed(ids.shape[0]))

    # --- encoding ------------------------------------------------------------------------
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit vectors of ``images``, an (n, dim) float32 array."""
        return self.encode_pixels([preprocess_image(im, self.preprocess) for im in images])

    def encode_pixels(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """Unit vectors of images already made into [3, S, S] inputs
        (:func:`preprocess_image`), so a caller holds small tensors, not whole images."""
        if not pixels:
            return np.zeros((0, self.dim), dtype=np.float32)
        m = self._get()
        batch = np.stack(pixels).astype(np.float32, copy=False)
        return self._run(m.visual, batch, m.image_batch,
                         lambda part, _start: {m.image_input: part})

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts``, an (n, dim) float32 array."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        m = self._get()
        cleaned = [self._clean(t) for t in texts]
        encodings = m.tokenizer.encode_batch(cleaned)
        ids = np.asarray([e.ids for e in encodings], dtype=m.text_dtype)
        masks = np.asarray([e.attention_mask for e in encodings], dtype=m.text_dtype)
        ids_name, mask_name = m.text_inputs

        def feed(part: np.ndarray, start: int) -> dict[str, np.ndarray]:
            out = {ids_name: part}
            if mask_name is not None:
                out[mask_name] = _pad_rows(masks[start:start + len(part)], len(part))
            return out

        return self._run(m.textual, ids, m.text_batch, feed)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`encode_texts`, under the text-embedding protocol's name."""
        return self.encode_texts(texts)

    def _run(self, session: Any, batch: np.ndarray, fixed: int | None,
             feed: Callable[[np.ndarray, int], dict[str, np.ndarray]]) -> np.ndarray:
        step = fixed or self._max_batch
        parts = []
        for start in range(0, len(batch), step):
            part = batch[start:start + step]
            n = len(part)
            if fixed:  # a graph exported for exactly `fixed` items
                part = _pad_rows(part, fixed)
            out = np.asarray(session.run(None, feed(part, start))[0], dtype=np.float32)
            parts.append(out.reshape(len(part), -1)[:n])
        rows = _normalise(np.vstack(parts))
        self.dim = int(rows.shape[1])
        return rows

    def _clean(self, text: str) -> str:
        text = " ".join(text.split())
        if self._canonicalize:  # open_clip's "canonicalize": no punctuation, lower case
            text = text.translate(_PUNCTUATION).lower()
        return text


def _pad_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """``rows`` with zero rows added up to ``n``."""
    if len(rows) >= n:
        return rows
    return np.concatenate([rows, np.zeros((n - len(rows), *rows.shape[1:]), rows.dtype)])


def _fixed(dim: object) -> int | None:
    """A static tensor dimension, or None for a symbolic one."""
    return dim if isinstance(dim, int) and dim > 0 else None


_shared: dict[tuple[Path, int, int], ClipModel] = {}
_shared_lock = threading.Lock()


def clip_model(settings: Settings) -> ClipModel | None:
    """The process's CLIP model for ``settings`` (one per folder: the pipeline and search
    share its sessions), or None when ``clip_model_dir`` is not set."""
    if settings.clip_model_dir is None:
        return None
    key = (Path(settings.clip_model_dir).expanduser().resolve(), settings.model_threads,
           settings.clip_batch_size)
    with _shared_lock:
        model = _shared.get(key)
        if model is None:
            model = _shared[key] = ClipModel(key[0], threads=settings.model_threads,
                                             max_batch=settings.clip_batch_size)
        return model
