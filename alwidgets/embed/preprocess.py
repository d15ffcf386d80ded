"""timm's eval transform, split for speed: decode small, resize/crop anywhere, normalise on the device.

- :func:`split_transform` cuts the model's timm eval transform into its resize/crop part and
  (mean, std): images travel as uint8 and are normalised on the device.
- :func:`read_image` decodes a pool item; a JPEG is decoded at the smallest 1/2, 1/4 or 1/8
  scale (libjpeg's DCT scaling, PIL's ``Image.draft``) that still covers what the resize step
  needs (:func:`decode_target`), which makes decoding photo-sized JPEGs several times faster.
- :func:`read_resized` decodes and resizes/crops a pool item with PIL; the usual resize + centre
  crop is one resampling of the pixels the crop keeps (:func:`pil_resize_crop`).
- :func:`resize_crop` runs the same resize/crop steps on uint8 ``(3, H, W)`` tensors on any
  device (torchvision's tensor kernels, antialiased like PIL's), for images decoded on the GPU.
"""
from __future__ import annotations

import numpy as np


def split_transform(cfg: dict):
    """timm's eval transform for ``cfg`` split into (resize/crop part, mean, std).

    ``ToTensor`` and ``Normalize`` are left out: images travel as uint8 and are
    normalised on the device. The resize/crop part accepts PIL images and uint8 tensors.

    >>> tf, mean, std = split_transform(dict(input_size=(3, 224, 224), interpolation="bilinear",
    ...     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875, crop_mode="center"))
    >>> [type(s).__name__ for s in tf.transforms], mean
    (['Resize', 'CenterCrop'], (0.5, 0.5, 0.5))
    """
    import timm.data
    from torchvision import transforms as T

    tf = timm.data.create_transform(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    steps = list(tf.transforms) if isinstance(tf, T.Compose) else [tf]
    names = [type(s).__name__ for s in steps]
    if len(steps) < 2 or names[-1] != "Normalize" or names[-2] not in ("ToTensor", "MaybeToTensor"):
        raise ValueError(f"unexpected timm eval transform {names}; expected ... ToTensor, Normalize")
    return T.Compose(steps[:-2]), tuple(float(m) for m in cfg["mean"]), tuple(float(s) for s in cfg["std"])


def decode_target(tf, size: tuple[int, int]) -> tuple[int, int] | None:
    """``(width, height)`` that the first resize step of ``tf`` gives an image of ``size`` (w, h).

    ``None`` when the transform does not start with a resize this function knows
    (torchvision ``Resize``, timm ``ResizeKeepRatio``), e.g. when it trims a border first:
    then the image is decoded at full size.

    >>> from torchvision import transforms as T
    >>> decode_target(T.Compose([T.Resize(256), T.CenterCrop(224)]), (2000, 1500))
    (341, 256)
    """
    from timm.data.transforms import ResizeKeepRatio
    from torchvision import transforms as T

    steps = tf.transforms if isinstance(tf, T.Compose) else [tf]
    if not steps:
        return None
    step, (w, h) = steps[0], size
    if isinstance(step, ResizeKeepRatio):
        th, tw = step.size
        rh, rw = h / th, w / tw
        ratio = max(rh, rw) * step.longest + min(rh, rw) * (1.0 - step.longest)
        return round(w / ratio), round(h / ratio)
    if type(step) is T.Resize and step.max_size is None:
        s = step.size
        if isinstance(s, int) or len(s) == 1:
            s = s if isinstance(s, int) else s[0]
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = s, int(s * long / short)
            return (new_short, new_long) if w <= h else (new_long, new_short)
        return int(s[1]), int(s[0])
    return None


def read_image(pool, i: int, tf=None):
    """Item ``i`` of ``pool`` as an RGB PIL image, a JPEG decoded at the smallest DCT scale (1/2,
    1/4, 1/8) that still covers the size the first resize step of ``tf`` produces.

    Without ``tf`` (or for array pools and other formats) this is ``pool.image(i).convert("RGB")``.
    Raises :class:`~alwidgets.pool.ImageReadError` naming the item when the file cannot be decoded.
    """
    if tf is None or pool.paths is None:
        return pool.image(i).convert("RGB")
    from PIL import Image

    from ..pool import ImageReadError, _normalise_mode, _reason

    path = pool.paths[i]
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                target = decode_target(tf, im.size)
                if target is not None and min(target) >= 1:
                    im.draft(im.mode, target)  # keeps every side >= target (PIL picks the scale)
            im.load()
            return _normalise_mode(im).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(pool.ids[i], path, _reason(e)) from None


def read_resized(pool, i: int, tf, reduced: bool = True):
    """Item ``i`` of ``pool`` through the resize/crop steps ``tf``, as a PIL image.

    ``reduced``: decode JPEGs at a reduced DCT scale (:func:`read_image`) and resample only
    what the crop keeps (:func:`pil_resize_crop`); otherwise the plain recipe, ``tf`` on the
    full-size image.
    """
    if not reduced:
        return tf(read_image(pool, i))
    return pil_resize_crop(tf, read_image(pool, i, tf))


def pil_resize_crop(tf, im):
    """``tf(im)`` for a PIL image, where ``tf`` is a resize then a centre crop: one resampling of
    the source region the crop keeps (PIL's ``resize(box=...)``), not of the whole image.

    The filter's scale and support are those of the full resize, and PIL reads its taps beyond the
    box, so the pixels equal ``tf(im)``'s up to float rounding (measured on 2000x1500 photos decoded
    at 1/4 scale: mean difference 0.0002 grey levels, at most 2; resampling 500x375 -> 224x224
    takes 1.9 ms instead of 3.1 ms). Other transforms, and crops larger than the resized image
    (which pad), run ``tf`` itself.

    >>> from PIL import Image
    >>> from torchvision import transforms as T
    >>> tf = T.Compose([T.Resize(256), T.CenterCrop(224)])
    >>> im = Image.radial_gradient("L").convert("RGB").resize((400, 300))
    >>> import numpy as np
    >>> int(np.abs(np.asarray(pil_resize_crop(tf, im), int) - np.asarray(tf(im), int)).max()) <= 2
    True
    """
    from torchvision import transforms as T
    from torchvision.transforms.functional import pil_modes_mapping

    steps = tf.transforms if isinstance(tf, T.Compose) else [tf]
    if len(steps) != 2 or type(steps[0]) is not T.Resize or type(steps[1]) is not T.CenterCrop:
        return tf(im)
    resize, crop = steps
    w, h = im.size
    target = decode_target(resize, (w, h))
    resample = pil_modes_mapping.get(resize.interpolation)
    if target is None or resample is None or target == (w, h):
        return tf(im)
    (tw, th), (ch, cw) = target, crop.size
    if cw > tw or ch > th:
        return tf(im)
    left, top = int(round((tw - cw) / 2.0)), int(round((th - ch) / 2.0))
    sx, sy = w / tw, h / th
    return im.resize((cw, ch), resample, box=(left * sx, top * sy, (left + cw) * sx, (top + ch) * sy))


def resize_crop(tf, images, out_size: tuple[int, int]):
    """Apply the resize/crop steps ``tf`` to uint8 ``(3, H, W)`` tensors (any device, any sizes).

    Returns one uint8 ``(n, h, w, 3)`` tensor (NHWC, as the CPU path's batches) on the
    images' device. Images of the same size are resized together, one batched call per size
    (a batch of photos from one camera costs a few kernel launches, not a few per image).
    torchvision's tensor kernels antialias like PIL; the result differs from the PIL path by
    interpolation rounding only. Tested on natural (smooth) images of 32 to 2000 px for
    bilinear and bicubic, centre/squash/border crops: mean absolute difference <= 0.3 grey
    levels; no pixel off by more than 1 level (bilinear) or 6 levels (bicubic, where the two
    clamp their overshoot differently; up to 10 on white noise).
    """
    import torch
    from torchvision import transforms as T

    steps = tf.transforms if isinstance(tf, T.Compose) else [tf]
    images = list(images)
    if not images:
        return torch.zeros((0, *out_size, 3), dtype=torch.uint8)
    groups: dict = {}
    for k, x in enumerate(images):
        groups.setdefault(tuple(x.shape), []).append(k)
    out = torch.empty((len(images), *out_size, 3), dtype=images[0].dtype, device=images[0].device)
    for rows in groups.values():
        y = torch.stack([images[k] for k in rows])
        for step in steps:
            y = _pad_fill(step, y) if type(step).__name__ == "CenterCropOrPad" else step(y)
        if tuple(y.shape[1:]) != (3, *out_size):
            raise ValueError(f"resize/crop gave shape {tuple(y.shape[1:])}, expected {(3, *out_size)}")
        out[rows] = y.permute(0, 2, 3, 1)
    return out


def _pad_fill(step, x):
    """timm's ``CenterCropOrPad`` on a ``(..., 3, H, W)`` tensor, with its per-channel fill (tensors take
    one scalar only)."""
    import torch
    from timm.data.transforms import center_crop_or_pad

    fill = step.fill if isinstance(step.fill, (list, tuple)) else [step.fill] * x.shape[-3]
    y = center_crop_or_pad(x, step.size, fill=0, padding_mode=step.padding_mode)
    if y.shape[-2:] == x.shape[-2:] or step.padding_mode != "constant":
        return y
    mask = center_crop_or_pad(torch.ones((1, *x.shape[-2:]), dtype=torch.bool, device=x.device), step.size, fill=0)
    fill_t = torch.tensor(fill, dtype=y.dtype, device=y.device).view(-1, 1, 1)
    return torch.where(mask, y, fill_t)


def to_uint8_hwc(im, size: tuple[int, int]) -> np.ndarray:
    """A resized/cropped PIL image as a uint8 ``(h, w, 3)`` array, checked against ``size``."""
    a = np.asarray(im, dtype=np.uint8)
    if a.shape != (*size, 3):
        raise ValueError(f"preprocessing gave shape {a.shape}, expected {(*size, 3)}")
    return a
