"""Pooled features of a pretrained timm backbone: the embeddings that make selection work.

Fast on both devices. On the CPU, JPEGs are decoded at reduced DCT scale and resized
in DataLoader workers, sent as uint8 (4x less to copy than float) and normalised
after the copy, with every core busy. On CUDA, files are read by I/O threads and
decoded, resized and normalised on the GPU one batch ahead of the forward
(:mod:`alwidgets.embed.device`); the model runs channels_last under fp16 autocast
and halves the batch on out-of-memory. The cached, chunked, resumable run loop is
:class:`~alwidgets.embed.base.Embedder`'s, so a pool is embedded once.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .base import Embedder
from .cache import DEFAULT_CHUNK, file_sha256
from .preprocess import read_resized, split_transform, to_uint8_hwc

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DECODES = ("auto", "pil", "pil-full", "device")
CACHE_FORMAT = "timm-pooled-v1"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but could not be loaded."""


class TimmEmbedder(Embedder):
    """Embed a :class:`~alwidgets.Pool` with a timm backbone's pooled features.

    Parameters
    ----------
    model_name : str
        A timm model name (``"resnet50.a1_in1k"``, ``"vit_small_patch14_dinov2"``).
    pretrained : bool
        Load pretrained weights (default). An error, never random weights, when
        they cannot be obtained; ``False`` gives a randomly initialised model.
    checkpoint : path, optional
        A local ``.safetensors`` / ``.pth`` file with the weights, for offline
        use (passed to timm as ``pretrained_cfg_overlay=dict(file=...)``).
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    batch_size : int, optional
        Images per forward pass; default 256 on CUDA, 32 on CPU. Halved
        automatically when CUDA runs out of memory.
    num_workers : int, optional
        DataLoader worker processes that decode and resize images (``decode="pil"``,
        ``"pil-full"``), or the threads that read files (``decode="device"``); default
        ``min(8, cores)`` on CUDA, ``cores - 1`` on CPU (the rest of the cores run the model).
        In a process that has loaded Ray or gRPC, PIL decodes in that many threads instead: a
        process forked from it can crash (:func:`fork_is_unsafe`).
    precision : str
        ``"auto"`` (fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"bf16"`` or
        ``"fp16"`` (autocast). fp16 keeps embeddings within a cosine of 0.999 of fp32;
        bf16 was measured at a minimum cosine of 0.92 (MobileNet V1, CIFAR-10), so it
        is never the default (see docs/benchmarks.md).
    decode : str
        How images are decoded and resized: ``"auto"`` (``"device"`` on CUDA, else ``"pil"``);
        ``"pil"``: PIL in the DataLoader workers, JPEGs decoded at the smallest 1/2, 1/4 or
        1/8 scale that still covers the resize target (much faster for photos);
        ``"pil-full"``: PIL at full resolution (the plain timm recipe); ``"device"``: file
        bytes read by I/O threads, JPEGs decoded in batches by ``torchvision.io.decode_jpeg``
        on the model's device (nvJPEG on CUDA) and resized/cropped there, other formats by
        PIL per image.
    cache_dir : path or False, optional
        Where embeddings are cached; default ``$ALWIDGETS_CACHE`` or
        ``~/.cache/alwidgets/embeddings``. ``False`` turns the cache off.
    pretrained_cfg_overlay : dict, optional
        Overrides of the model's pretrained config: ``mean``, ``std``,
        ``interpolation``, ``crop_pct``, ``input_size`` of a custom checkpoint.
    progress : bool
        Show a tqdm progress bar (a widget in notebooks) with images/s.
    **model_kwargs
        Passed to ``timm.create_model`` (e.g. ``pad_type="same"``).

    Examples
    --------
    >>> from alwidgets import Pool
    >>> from alwidgets.embed import TimmEmbedder
    >>> emb = TimmEmbedder("resnet10t", pretrained=False, cache_dir=False, progress=False,
    ...                    pretrained_cfg_overlay=dict(input_size=(3, 32, 32), crop_pct=1.0))
    >>> emb.embed(Pool.digits().subset(range(8))).shape
    (8, 512)
    """

    def __init__(self, model_name: str, pretrained: bool = True, checkpoint=None, device: str = "auto",
                 batch_size: int | None = None, num_workers: int | None = None, precision: str = "auto",
                 decode: str = "auto", cache_dir=None, pretrained_cfg_overlay: dict | None = None, progress: bool = True,
                 **model_kwargs):
        self.model_name = model_name
        self.pretrained = pretrained
        self.checkpoint = checkpoint
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.precision = precision
        self.decode = decode
        self.cache_dir = cache_dir
        self.pretrained_cfg_overlay = pretrained_cfg_overlay
        self.progress = progress
        self.model_kwargs = model_kwargs
        self.cache_chunk = DEFAULT_CHUNK
        self._model = None

    # ------------------------------------------------------------------ settings
    def _device(self, check: bool = True):
        """The torch device; ``check=False`` names it without requiring it here (a cluster's GPUs)."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if check and dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={self.device!r} but CUDA is not available; use device='auto' or 'cpu'")
        return dev

    def _precision(self, device) -> str:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision != "auto":
            return self.precision
        # fp16, not bf16: bf16's 8-bit mantissa moved MobileNet V1 embeddings to a cosine of 0.92
        return "fp16" if device.type == "cuda" else "fp32"

    def _decode(self, device) -> str:
        if self.decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {self.decode!r}")
        if self.decode != "auto":
            return self.decode
        return "device" if device.type == "cuda" else "pil"

    def _batch_size(self, device) -> int:
        bs = self.batch_size if self.batch_size is not None else (256 if device.type == "cuda" else 32)
        if isinstance(bs, bool) or int(bs) != bs or bs < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        return int(bs)

    def _num_workers(self, device) -> int:
        if self.num_workers is not None:
            if int(self.num_workers) != self.num_workers or self.num_workers < 0:
                raise ValueError(f"num_workers must be an integer >= 0, got {self.num_workers!r}")
            return int(self.num_workers)
        cores = _cores()
        return min(8, cores) if device.type == "cuda" else max(0, cores - 1)

    # --------------------------------------------------------------------- model
    @property
    def model_(self):
        """The timm backbone (``num_classes=0``) in eval mode, built on first use."""
        if self._model is None:
            self._model = self._build_model()
        return self._model

    def _build_model(self):
        import timm

        if "num_classes" in self.model_kwargs:
            raise ValueError("num_classes is fixed to 0 (pooled features); drop it from the model kwargs")
        overlay = dict(self.pretrained_cfg_overlay or {})
        if self.checkpoint is not None:
            if not self.pretrained:
                raise ValueError("checkpoint= loads pretrained weights; it cannot be combined with pretrained=False")
            path = Path(self.checkpoint).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint file not found: {path}")
            overlay["file"] = str(path.resolve())
        name = self.model_name
        if ":" not in name and not timm.is_model(name):
            close = timm.list_models(f"*{name.split('.')[0][:12]}*")[:5]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise ValueError(f"unknown timm model {name!r}{hint} (see timm.list_models())")
        catcher = _TimmLogCatcher()
        try:
            with catcher:
                model = timm.create_model(name, pretrained=bool(self.pretrained), num_classes=0,
                                          pretrained_cfg_overlay=overlay or None, **self.model_kwargs)
        except Exception as e:  # noqa: BLE001 - any failure to obtain weights gets the same advice
            if not self.pretrained:
                raise
            if isinstance(e, RuntimeError) and "state_dict" in str(e):
                raise WeightsUnavailableError(
                    f"the weights {overlay.get('file', '')!s} do not fit {name!r}: {_first_line(e)} "
                    "(check the model name and model kwargs such as pad_type)") from None
            raise WeightsUnavailableError(self._weights_advice(name, e)) from None
        if self.pretrained:
            missing = [k for k in catcher.missing if not k.endswith("num_batches_tracked")]
            if missing:
                raise WeightsUnavailableError(
                    f"the weights {overlay.get('file', '')!s} do not fit {name!r}: {len(missing)} model "
                    f"tensors were not in the file (e.g. {', '.join(missing[:3])}); check the model name "
                    "and model kwargs, or the file's key names")
            if catcher.random_init:
                raise WeightsUnavailableError(self._weights_advice(name, catcher.random_init))
        return model.eval().requires_grad_(False)

    def _weights_advice(self, name, cause) -> str:
        return (f"could not load pretrained weights for {name!r} ({_first_line(cause)}). "
                "Without network access, download the weights elsewhere and pass "
                "checkpoint='path/to/weights.safetensors' (or .pth; set mean/std/interpolation with "
                "pretrained_cfg_overlay if they differ from the model's defaults), or put them in the "
                "Hugging Face cache (HF_HOME). pretrained=False gives random weights.")

    def data_config(self) -> dict:
        """Preprocessing from the model's pretrained config (input size, resize, crop, mean, std)."""
        import timm.data

        cfg = timm.data.resolve_data_config({}, model=self.model_)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}

    def _weights_id(self) -> str:
        if self.checkpoint is not None:
            return "file:" + file_sha256(Path(self.checkpoint).expanduser())
        if self.pretrained:
            cfg = dict(getattr(self.model_, "pretrained_cfg", {}) or {})
            return "tag:" + "|".join(str(cfg.get(k, "")) for k in ("architecture", "tag", "hf_hub_id", "url", "file"))
        h = hashlib.sha256()  # random weights: the numbers themselves
        for k, t in self.model_.state_dict().items():
            h.update(k.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return "random:" + h.hexdigest()

    # ------------------------------------------------------------ Embedder hooks
    def _label(self) -> str:
        return self.model_name

    def _identity(self) -> dict:
        device = self._device(check=False)
        return dict(format=CACHE_FORMAT, model=self.model_name, model_kwargs=self.model_kwargs,
                    overlay={k: v for k, v in (self.pretrained_cfg_overlay or {}).items() if k != "file"},
                    weights=self._weights_id(), data=self.data_config(), precision=self._precision(device),
                    decode=self._decode(device))

    def _runtime(self) -> "_Runtime":
        """The model on its device and the constants of a run (built once per run, or per Ray actor)."""
        import torch

        rt = _Runtime()
        rt.device = device = self._device()
        rt.precision = self._precision(device)
        rt.decode = self._decode(device)
        rt.batch_size = self._max_batch = self._batch_size(device)
        cfg = self.data_config()
        model = self.model_.to(device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input size throughout: let cuDNN pick its fastest kernels
        if device.type == "cuda" or _channels_last_helps(model):
            model = model.to(memory_format=torch.channels_last)
        rt.model = model
        rt.tf, mean, std = split_transform(cfg)
        rt.scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, 3, 1, 1)
        rt.shift = torch.tensor([m / s for m, s in zip(mean, std)], device=device).view(1, 3, 1, 1)
        rt.size = tuple(cfg["input_size"][1:])
        return rt

    def _embed_batches(self, pool, chunks):
        """Embed the rows of ``chunks`` ({chunk: rows}) in batches that never straddle two chunks;
        yield ``(rows, X, {row: reason})`` per batch (see :class:`~alwidgets.embed.base.Embedder`)."""
        import torch

        rt = self._runtime()
        device, bs = rt.device, rt.batch_size
        batches = [list(rows[k:k + bs]) for rows in chunks.values() for k in range(0, len(rows), bs)]
        skip = {pool.index_of(i) for i in pool.errors}
        workers = self._num_workers(device)
        if rt.decode != "device" and self.num_workers is None and len(batches) <= 1:
            workers = 0  # one batch: starting a worker process costs more than it saves
        if rt.decode == "device" or (workers and fork_is_unsafe()):
            # I/O threads + batched decoding and resizing on the device, or PIL in those threads
            from .device import DeviceBatches

            loader = DeviceBatches(pool, rt.tf, rt.size, batches, device, io_workers=max(1, workers), skip=skip,
                                   decode=rt.decode)
        else:  # PIL in DataLoader worker processes
            from torch.utils.data import DataLoader

            loader = DataLoader(_Images(pool, rt.tf, rt.size, skip, draft=rt.decode == "pil"), batch_sampler=batches,
                                num_workers=workers, pin_memory=device.type == "cuda",
                                prefetch_factor=4 if workers else None, persistent_workers=False,
                                worker_init_fn=_decode_behind_the_model if device.type == "cpu" else None)
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(_cores())
        # CUDA: a short last batch is padded to the full size, so each call runs one input shape and
        # reuses cuDNN's autotuned kernels (a new tail shape re-tunes, hundreds of ms per embed call)
        pad = device.type == "cuda" and len(batches) > 1
        try:
            with torch.inference_mode(), rt.autocast():
                for x, idx, msgs in loader:
                    feats = self._forward_batches(rt.model, x, device, rt.scale, rt.shift, pad=pad)
                    idx = idx.tolist() if hasattr(idx, "tolist") else list(idx)
                    yield idx, feats, {idx[k]: msg for k, msg in enumerate(msgs) if msg}
        finally:
            torch.set_num_threads(threads)

    # ------------------------------------- two stages, for executors that split them (Ray)
    def _row_loader(self) -> "_RowLoader":
        """Stage 1 as a small picklable object (no model): ``loader(pool, rows) -> (uint8 (n, h, w, 3),
        {row: reason})``, decoding with PIL (reduced-scale JPEGs for ``decode="pil"``).

        The batched device decoder belongs to one machine's pipeline, so ``decode="device"`` is refused.
        """
        decode = self._decode(self._device(check=False))
        if decode == "device":
            raise ValueError("decode='device' runs inside one machine's pipeline; with another executor "
                             "pass decode='pil' (or 'pil-full')")
        cfg = self.data_config()
        return _RowLoader(cfg, tuple(cfg["input_size"][1:]), draft=decode == "pil")

    def _forward_rows(self, rt, x: np.ndarray) -> np.ndarray:
        """Stage 2 (the model): embeddings of uint8 ``(n, h, w, 3)`` images from :meth:`_load_rows`."""
        import torch

        with torch.inference_mode(), rt.autocast():
            return self._forward_batches(rt.model, torch.from_numpy(np.ascontiguousarray(x)), rt.device,
                                         rt.scale, rt.shift)

    def _forward_batches(self, model, x, device, scale, shift, pad: bool = False) -> np.ndarray:
        """Run ``x`` (uint8, NHWC) through the model, halving the batch on out-of-memory;
        ``pad``: run a short batch padded with zeros to the batch size (one input shape)."""
        import torch

        parts, start = [], 0
        while start < len(x):
            bs = self._max_batch
            oom = False
            try:
                part = x[start:start + bs]
                n = len(part)
                if pad and n < bs:
                    part = torch.cat([part, part.new_zeros((bs - n, *part.shape[1:]))])
                parts.append(self._forward(model, part, device, scale, shift)[:n])
                start += bs
            except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                if not _is_oom(e) or bs == 1:
                    raise
                oom = True
            if oom:  # outside the except block, so the failed batch's tensors are freed first
                self._max_batch = max(1, bs // 2)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                warnings.warn(f"out of memory with {bs} images per batch; retrying with {self._max_batch}",
                              RuntimeWarning, stacklevel=2)
        return np.concatenate(parts)

    @staticmethod
    def _forward(model, x, device, scale, shift) -> np.ndarray:
        """uint8 NHWC on the host -> normalised float NCHW (channels_last) on ``device`` -> features."""
        x = x.to(device, non_blocking=True).permute(0, 3, 1, 2)  # NCHW view, channels_last memory
        x = x.float().mul_(scale).sub_(shift)  # (x/255 - mean)/std
        f = model(x)
        return f.float().cpu().numpy()


class _Runtime:
    """What one run (or one Ray actor) keeps: model on device, transform, normalisation constants."""

    def autocast(self):
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)


class _RowLoader:
    """Decode and resize/crop given rows of a pool with PIL: stage 1 of a two-stage executor."""

    def __init__(self, cfg: dict, size: tuple, draft: bool):
        self.cfg, self.size, self.draft = cfg, size, draft
        self._tf = None

    def __getstate__(self):
        return dict(cfg=self.cfg, size=self.size, draft=self.draft, _tf=None)

    def __call__(self, pool, rows):
        if self._tf is None:
            self._tf = split_transform(self.cfg)[0]
        ds = _Images(pool, self._tf, self.size, {pool.index_of(i) for i in pool.errors}, draft=self.draft)
        X = np.zeros((len(rows), *self.size, 3), np.uint8)
        errors = {}
        for k, r in enumerate(rows):
            x, _, msg = ds[int(r)]
            if msg:
                errors[int(r)] = msg
            else:
                X[k] = x.numpy()
        return X, errors


class _Images:
    """Dataset of (uint8 HWC tensor, row, error message) after the resize/crop.

    ``draft``: decode JPEGs at a reduced DCT scale that still covers the resize target, and
    resample only what the crop keeps (:func:`~alwidgets.embed.preprocess.read_resized`).
    """

    def __init__(self, pool, tf, size, skip, draft: bool):
        self.pool, self.tf, self.size, self.skip, self.draft = pool, tf, size, skip, draft

    def __len__(self):
        return len(self.pool)

    def __getitem__(self, i):
        import torch

        from ..pool import ImageReadError

        if i in self.skip:
            return torch.zeros((*self.size, 3), dtype=torch.uint8), i, self.pool.errors.get(self.pool.ids[i], "skipped")
        try:
            im = read_resized(self.pool, i, self.tf, reduced=self.draft)
        except ImageReadError as e:
            return torch.zeros((*self.size, 3), dtype=torch.uint8), i, e.reason
        try:
            a = to_uint8_hwc(im, self.size)
        except ValueError as e:
            raise ValueError(f"item {self.pool.ids[i]!r}: {e}") from None
        return torch.from_numpy(a.copy()), i, ""


class _TimmLogCatcher(logging.Filter):
    """Reads timm's loader messages (missing keys, random init) while a model loads.

    timm reports missing keys only at INFO level, so the loader's logger is
    lowered to INFO for the duration; the filter passes on only what the
    previous level would have let through, so users see no extra messages.
    """

    LOGGER = "timm.models._builder"

    def __init__(self):
        super().__init__()
        self.missing: list[str] = []
        self.random_init = ""

    def filter(self, record):
        msg = record.getMessage()
        if msg.startswith("Missing keys ("):
            self.missing += [k.strip() for k in msg[len("Missing keys ("):].split(")")[0].split(",")]
        elif "random init" in msg or "cannot load weights" in msg:
            self.random_init = msg
        return record.levelno >= self._effective

    def __enter__(self):
        self._logger = logging.getLogger(self.LOGGER)
        self._level = self._logger.level
        self._effective = self._logger.getEffectiveLevel()
        self._logger.addFilter(self)
        self._logger.setLevel(min(self._effective, logging.INFO))
        return self

    def __exit__(self, *exc):
        self._logger.removeFilter(self)
        self._logger.setLevel(self._level)
        return False


def fork_is_unsafe() -> bool:
    """Whether a forked worker process could crash: this process has loaded gRPC's core, through the
    ``grpc`` package (a Ray client) or Ray's own core (a Ray driver). Its threads outlive
    ``ray.shutdown()`` and may hold gRPC's locks at the fork ("DataLoader worker ... killed by signal:
    Segmentation fault"). Decoding then runs in threads of this process instead."""
    return "grpc" in sys.modules or "ray._raylet" in sys.modules


def _decode_behind_the_model(_worker_id: int) -> None:
    """A CPU decoding worker yields to the model's threads: on a machine with few cores the forward
    pass, not the decoding, sets the pace, and the decoder fills the time the forward's threads leave."""
    try:
        os.nice(5)
    except OSError:  # not allowed here: decode at the same priority
        pass


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _channels_last_helps(model) -> bool:
    """channels_last is faster for convolutional nets on CPU (oneDNN), not for plain transformers."""
    import torch

    return any(isinstance(m, torch.nn.Conv2d) and m.kernel_size != m.stride for m in model.modules())


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _first_line(e) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
