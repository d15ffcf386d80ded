"""Dense features: a frozen timm backbone's feature maps at several strides, cached as float16.

:class:`DenseEmbedder` is a :class:`~alwidgets.embed.TimmEmbedder` built with
``features_only=True``: it shares the model building, weight checks, device and
precision handling and cache key parts, and returns a :class:`DenseFeatures`
(one ``(n, C, h, w)`` float16 array per stride, plus a global pooled embedding
per image for image-level coverage). Images keep their native resolution
unless ``image_size=`` asks for a resize.

The cache is one folder per (backbone, weights, strides, image size,
precision, pool) under ``$ALWIDGETS_CACHE/dense`` (default
``~/.cache/alwidgets/dense``): chunks of images are written atomically as they
finish, so an interrupted run resumes; when all are there they are joined into
one ``.npy`` per stride (opened memory-mapped, so a 600-image CamVid cache of
about 1.5 GB costs no RAM until read) and ``meta.json`` is written last.

>>> from alwidgets.segmentation import DenseEmbedder, make_shapes
>>> data = make_shapes(n_images=3, size=(32, 32))
>>> emb = DenseEmbedder("resnet10t", pretrained=False, out_indices=(2, 3), cache_dir=False, progress=False)
>>> f = emb.embed(data.pool)
>>> f.strides, [m.shape for m in f.maps], f.maps[0].dtype, f.pooled.shape
((8, 16), [(3, 128, 4, 4), (3, 256, 2, 2)], dtype('float16'), (3, 256))
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import atomic_write
from ..embed.cache import cache_key, default_cache_dir
from ..embed.base import _progress
from ..embed.timm import TimmEmbedder, _cores
from ..pool import ImageReadError

CACHE_FORMAT = "timm-dense-v1"
DEFAULT_CHUNK = 32


@dataclass
class DenseFeatures:
    """Feature maps of a pool, finest stride first.

    Attributes
    ----------
    maps : list of (n, C_s, h_s, w_s) float16 arrays (possibly memory-mapped)
    strides : tuple of int, the backbone's reduction of each map
    pooled : (n, D) float32, the global average of the coarsest map (the image embedding)
    image_size : (H, W) the images had when the features were computed
    ids : list of str, the pool's ids (rows)
    errors : {row: reason} for unreadable images (their rows are zeros)
    """

    maps: list
    strides: tuple
    pooled: np.ndarray
    image_size: tuple
    ids: list
    errors: dict

    def __post_init__(self):
        n = len(self.ids)
        for s, m in zip(self.strides, self.maps):
            if m.ndim != 4 or m.shape[0] != n:
                raise ValueError(f"stride-{s} map has shape {m.shape}, expected ({n}, C, h, w)")
        if self.pooled.shape[0] != n:
            raise ValueError(f"pooled embedding has {self.pooled.shape[0]} rows for {n} items")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def channels(self) -> tuple:
        return tuple(int(m.shape[1]) for m in self.maps)

    def item(self, i: int) -> list:
        """The maps of item ``i`` as float32 arrays ``(C_s, h_s, w_s)``."""
        return [np.asarray(m[i], dtype=np.float32) for m in self.maps]

    @classmethod
    def from_pixels(cls, pool, strides=(4, 8)) -> "DenseFeatures":
        """Average-pooled RGB (and its square) at each stride: backbone-free features for tests and demos.

        >>> from alwidgets.segmentation import make_shapes
        >>> f = DenseFeatures.from_pixels(make_shapes(n_images=2, size=(16, 24)).pool, strides=(4, 8))
        >>> [m.shape for m in f.maps], f.pooled.shape
        ([(2, 6, 4, 6), (2, 6, 2, 3)], (2, 3))
        """
        imgs = np.stack([np.asarray(pool.image(i).convert("RGB"), np.float32) / 255.0 for i in range(len(pool))])
        n, H, W, _ = imgs.shape
        maps = []
        for s in strides:
            h, w = H // s, W // s
            if h < 1 or w < 1:
                raise ValueError(f"stride {s} is larger than the {W}x{H} images")
            a = imgs[:, :h * s, :w * s].reshape(n, h, s, w, s, 3)
            x = np.concatenate([a.mean(axis=(2, 4)), (a ** 2).mean(axis=(2, 4))], axis=-1)
            maps.append(x.transpose(0, 3, 1, 2).astype(np.float16))
        return cls(maps, tuple(int(s) for s in strides), imgs.mean(axis=(1, 2)), (H, W), list(pool.ids), {})

    def subset(self, indices) -> "DenseFeatures":
        """The rows at ``indices``, loaded into memory (float16)."""
        idx = np.asarray(indices, dtype=np.int64)
        pos = {int(r): k for k, r in enumerate(idx)}
        return DenseFeatures([np.ascontiguousarray(m[idx]) for m in self.maps], self.strides,
                             np.ascontiguousarray(self.pooled[idx]), self.image_size,
                             [self.ids[i] for i in idx], {pos[r]: v for r, v in self.errors.items() if r in pos})


class DenseEmbedder(TimmEmbedder):
    """Dense feature maps of a timm backbone (``features_only=True``), cached as float16.

    Parameters
    ----------
    model_name, pretrained, checkpoint, device, precision, pretrained_cfg_overlay, progress
        As for :class:`~alwidgets.embed.TimmEmbedder`.
    out_indices : tuple of int
        Which backbone stages to keep (timm's ``out_indices``); for MobileNet V1
        and most CNNs ``(2, 3, 4)`` are strides 8, 16 and 32.
    image_size : (H, W), optional
        Resize every image to this size first (needed when a pool mixes sizes);
        default: the native size, which must then be the same for all images.
    input_scale : int
        Run the backbone on images enlarged this many times (1, 2 or 4): finer
        maps for thin objects (poles, signs, people) at ``input_scale**2`` times
        the compute and disk. The features stay those of the (resized) images:
        ``image_size`` is unchanged and the strides are divided, so stride 8 at
        ``input_scale=2`` is reported as stride 4. On CamVid with MobileNet V1
        and 5-20 random masks, ``2`` gave +1 to +2 mIoU and +2.5 to +5 IoU on the
        four rarest classes (docs/segmentation.md).
    batch_size : int
        Images per forward pass (default 8 on CPU, 32 on CUDA).
    cache_dir : path or False, optional
        Default ``$ALWIDGETS_CACHE/dense`` or ``~/.cache/alwidgets/dense``; ``False`` turns it off.
    **model_kwargs
        Passed to ``timm.create_model`` (e.g. ``pad_type="same"`` for MobileNet V1).
    """

    def __init__(self, model_name: str, pretrained: bool = True, checkpoint=None, device: str = "auto",
                 out_indices=(2, 3, 4), image_size=None, input_scale: int = 1, batch_size: int | None = None,
                 precision: str = "auto", cache_dir=None, pretrained_cfg_overlay: dict | None = None,
                 progress: bool = True, **model_kwargs):
        for k in ("features_only", "out_indices"):
            if k in model_kwargs:
                raise ValueError(f"{k} is set by DenseEmbedder; pass out_indices= instead")
        super().__init__(model_name, pretrained=pretrained, checkpoint=checkpoint, device=device,
                         batch_size=batch_size, num_workers=0, precision=precision, cache_dir=cache_dir,
                         pretrained_cfg_overlay=pretrained_cfg_overlay, progress=progress,
                         features_only=True, out_indices=tuple(int(i) for i in out_indices), **model_kwargs)
        self.out_indices = tuple(int(i) for i in out_indices)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        integer = isinstance(input_scale, (int, np.integer)) and not isinstance(input_scale, bool)
        if not integer or input_scale not in (1, 2, 4):
            raise ValueError(f"input_scale must be 1, 2 or 4, got {input_scale!r}")
        self.input_scale = int(input_scale)
        self.cache_chunk = DEFAULT_CHUNK

    def __repr__(self) -> str:
        return super().__repr__().replace("TimmEmbedder(", "DenseEmbedder(", 1)

    def _batch_size(self, device) -> int:
        if self.batch_size is None:
            return 32 if device.type == "cuda" else 8
        return super()._batch_size(device)

    @property
    def strides(self) -> tuple:
        """Pixels of the (resized, not enlarged) image per cell of each map."""
        reductions = [int(r) for r in self.model_.feature_info.reduction()]
        if any(r % self.input_scale for r in reductions):
            raise ValueError(f"input_scale={self.input_scale} does not divide the strides {tuple(reductions)} of "
                             f"{self.model_name} at out_indices={self.out_indices}")
        return tuple(r // self.input_scale for r in reductions)

    def _image_size(self, pool) -> tuple:
        if self.image_size is not None:
            return self.image_size
        sizes = {}
        for i in range(len(pool)):
            if pool.ids[i] in pool.errors:
                continue
            if pool.arrays is not None:
                h, w = pool.arrays.shape[1:3]
            else:
                from PIL import Image
                try:
                    with Image.open(pool.paths[i]) as im:
                        w, h = im.size
                except (OSError, ValueError, SyntaxError) as e:
                    pool.report_error(i, str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
                    continue
            sizes.setdefault((int(h), int(w)), pool.ids[i])
            if len(sizes) > 1:
                (s0, a), (s1, b) = list(sizes.items())[:2]
                raise ValueError(f"{pool.name}: images differ in size ({a!r} is {s0[1]}x{s0[0]}, {b!r} is "
                                 f"{s1[1]}x{s1[0]}); pass image_size=(H, W) to resize them all")
        if not sizes:
            raise ValueError(f"{pool.name}: no readable image")
        return next(iter(sizes))

    # ------------------------------------------------------------------ embed
    def embed(self, pool, executor="local") -> DenseFeatures:
        """Feature maps of every pool item (unreadable items: zero rows, listed in ``errors``).

        ``executor`` is the embedder protocol's; dense maps are computed in this process only.
        """
        import torch

        if executor != "local":
            raise ValueError(f"DenseEmbedder computes its maps in this process; executor={executor!r} is not "
                             "supported (use executor='local')")
        if len(pool) == 0:
            raise ValueError("the pool is empty")
        device = self._device()
        precision = self._precision(device)
        model = self.model_
        cfg = self.data_config()
        size = self._image_size(pool)           # what the features describe
        strides = self.strides
        in_size = (size[0] * self.input_scale, size[1] * self.input_scale)   # what the backbone sees
        entry = None
        if self.cache_dir is not False:
            parts = dict(format=CACHE_FORMAT, model=self.model_name, model_kwargs=self.model_kwargs,
                         overlay={k: v for k, v in (self.pretrained_cfg_overlay or {}).items() if k != "file"},
                         weights=self._weights_id(), mean=cfg["mean"], std=cfg["std"], size=list(in_size),
                         precision=precision, pool=pool.fingerprint(), n=len(pool))
            root = (default_cache_dir().parent / "dense" if self.cache_dir is None
                    else Path(self.cache_dir).expanduser())
            entry = _DenseEntry(root / cache_key(parts), len(pool), self.cache_chunk, dict(parts, pool_name=pool.name))
            hit = entry.load()
            if hit is not None:
                maps, pooled, errors = hit
                for r, reason in errors.items():
                    pool.report_error(r, reason)
                return DenseFeatures(maps, strides, pooled, size, list(pool.ids), errors)
            todo = entry.missing_chunks()
        else:
            todo = [0]
        chunk = self.cache_chunk if entry is not None else len(pool)
        kept = {}
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(_cores())
        mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
        model = model.to(device)
        bs = self._batch_size(device)
        done = len(pool) - sum(len(range(c * chunk, min((c + 1) * chunk, len(pool)))) for c in todo)
        try:
            with _progress(self.progress, len(pool), done, f"{self.model_name} dense") as bar, torch.inference_mode():
                for c in todo:
                    rows = range(c * chunk, min((c + 1) * chunk, len(pool)))
                    parts, pooled, errors = [[] for _ in strides], [], {}
                    for k in range(0, len(rows), bs):
                        batch = list(rows[k:k + bs])
                        x = np.zeros((len(batch), in_size[0], in_size[1], 3), np.uint8)
                        for j, r in enumerate(batch):
                            msg = self._load(pool, r, in_size, x, j)
                            if msg:
                                pool.report_error(r, msg)  # raises under on_error="raise"
                                errors[r] = msg
                        t = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float().div_(255).sub_(mean).div_(std)
                        with self._autocast(device, precision):
                            outs = model(t)
                        bad = [j for j, r in enumerate(batch) if r in errors]
                        for s, o in enumerate(outs):
                            o = o.float()
                            if bad:
                                o[bad] = 0
                            parts[s].append(o.cpu().numpy().astype(np.float16))
                        pooled.append(outs[-1].float().mean(dim=(2, 3)).cpu().numpy())
                        if bad:
                            pooled[-1][bad] = 0
                        bar.update(len(batch))
                    arrays = [np.concatenate(p) for p in parts]
                    pooled_arr = np.concatenate(pooled).astype(np.float32)
                    if entry is None:
                        kept = dict(maps=arrays, pooled=pooled_arr, errors=errors)
                    else:
                        entry.save_chunk(c, arrays, pooled_arr, errors)
        finally:
            torch.set_num_threads(threads)
        if entry is None:
            return DenseFeatures(kept["maps"], strides, kept["pooled"], size, list(pool.ids), kept["errors"])
        maps, pooled, errors = entry.finish()
        for r, reason in errors.items():
            pool.report_error(r, reason)
        return DenseFeatures(maps, strides, pooled, size, list(pool.ids), errors)

    @staticmethod
    def _autocast(device, precision):
        import contextlib

        import torch

        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    @staticmethod
    def _load(pool, r, size, x, j) -> str:
        """Decode item ``r`` into ``x[j]`` (resized to ``size`` if needed); the error message or ''."""
        from PIL import Image

        if pool.ids[r] in pool.errors:
            return pool.errors[pool.ids[r]]
        try:
            im = pool.image(r).convert("RGB")
        except ImageReadError as e:
            return e.reason
        if (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        x[j] = np.asarray(im, dtype=np.uint8)
        return ""


class _DenseEntry:
    """Chunks of float16 maps written atomically; joined into one ``.npy`` per stride, ``meta.json`` last."""

    def __init__(self, directory: Path, n: int, chunk: int, meta: dict):
        self.dir, self.n, self.chunk, self.meta = Path(directory), int(n), int(chunk), meta

    def _chunk_path(self, c):
        return self.dir / f"chunk{self.chunk}-{c:06d}.npz"

    def missing_chunks(self):
        return [c for c in range(-(-self.n // self.chunk)) if not self._chunk_path(c).is_file()]

    def save_chunk(self, c, arrays, pooled, errors):
        self.dir.mkdir(parents=True, exist_ok=True)
        rows = np.array(sorted(errors), np.int64)
        msgs = np.array([errors[r] for r in rows.tolist()], dtype=str)
        payload = {f"map{s}": a for s, a in enumerate(arrays)}
        atomic_write(self._chunk_path(c), lambda tmp: _savez(tmp, pooled=pooled, err_rows=rows, err_msgs=msgs,
                                                              **payload))

    def load(self):
        try:
            meta = json.loads((self.dir / "meta.json").read_text())
            if meta.get("n") != self.n:
                return None
            maps = [np.load(self.dir / f"map{s}.npy", mmap_mode="r") for s in range(meta["n_maps"])]
            pooled = np.load(self.dir / "pooled.npy")
        except (OSError, ValueError, KeyError):
            return None
        if any(m.shape[0] != self.n for m in maps) or pooled.shape[0] != self.n:
            return None
        return maps, pooled, {int(k): v for k, v in meta.get("errors", {}).items()}

    def finish(self):
        chunks = [np.load(self._chunk_path(c)) for c in range(-(-self.n // self.chunk))]
        n_maps = sum(k.startswith("map") for k in chunks[0].files)
        errors = {}
        for z in chunks:
            errors.update(zip(z["err_rows"].tolist(), z["err_msgs"].tolist()))
        for s in range(n_maps):
            atomic_write(self.dir / f"map{s}.npy", lambda tmp, s=s: _join(tmp, [z[f"map{s}"] for z in chunks], self.n))
        pooled = np.concatenate([z["pooled"] for z in chunks])
        atomic_write(self.dir / "pooled.npy", lambda tmp: _save(tmp, pooled))
        meta = dict(self.meta, n=self.n, n_maps=n_maps, errors={str(k): v for k, v in sorted(errors.items())})
        atomic_write(self.dir / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1, default=str)))
        for z in chunks:
            z.close()
        for c in range(-(-self.n // self.chunk)):
            self._chunk_path(c).unlink(missing_ok=True)
        return self.load()


def _join(path, parts, n):
    """Write the float16 chunks ``parts`` one after another into an ``(n, ...)`` .npy file at ``path``."""
    first = parts[0]
    out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float16, shape=(n, *first.shape[1:]))
    k = 0
    for a in parts:  # each NpzFile member is read (decompressed) once, here
        out[k:k + len(a)] = a
        k += len(a)
    out.flush()
    del out


def _save(path, array):
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array, allow_pickle=False)


def _savez(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def mobilenet_v1(weights, **kwargs) -> DenseEmbedder:
    """The offline MobileNet V1 (Coral, ImageNet) of ``../shared/weights`` as a dense embedder, strides 8/16/32.

    ``weights`` is the ``mobilenetv1_100.coral_in1k.safetensors`` file; its
    preprocessing (mean = std = 0.5) and ``pad_type="same"`` are set here.
    """
    overlay = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=0.875,
                   input_size=(3, 224, 224))
    kwargs.setdefault("pretrained_cfg_overlay", overlay)
    kwargs.setdefault("pad_type", "same")
    return DenseEmbedder("mobilenetv1_100", checkpoint=str(weights), **kwargs)
