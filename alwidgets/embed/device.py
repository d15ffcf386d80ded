"""Decoding on the model's device: the ``decode="device"`` input pipeline of :class:`TimmEmbedder`.

A pool of I/O threads reads file bytes; a producer thread decodes each batch's JPEGs in one
``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG on CUDA), runs the model's
resize/crop (:func:`~alwidgets.embed.preprocess.resize_crop`) on the device and hands the uint8
batch over with a CUDA event (no host sync), on its own CUDA stream, while the main thread runs
the forward of the batch before: decoding of batch k+1 overlaps the forward of batch k, and the
reads of batch k+2 overlap both. Each I/O task reads a run of files (one task per file cost more
than the read: 23,000 files/s from 8 threads against 66,000 from one, 500x375 JPEGs on an H200
machine). Files the device decoder does not take (PNG, WebP, progressive, CMYK/Adobe or 12-bit
JPEG, a JPEG without its end marker, or one the decoder rejects) go through the CPU path per image
(PIL in the I/O thread); unreadable files come back as per-item errors and never stop the run.

Everything here is device-agnostic torch code: with ``device="cpu"`` the same pipeline runs on
the CPU (libjpeg-turbo through torchvision), which is how it is tested without a GPU. With
``decode="pil"`` (or ``"pil-full"``) every image takes the CPU path in the I/O threads: the
embedder's PIL decoding, in threads instead of forked worker processes, for a process that must
not fork (see :func:`~alwidgets.embed.timm.fork_is_unsafe`).
"""
from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .preprocess import decode_target, read_resized, resize_crop, to_uint8_hwc

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_END = object()


def device_decodable(data) -> bool:
    """Whether ``data`` (bytes or uint8 array) is a JPEG the batched device decoder takes.

    Baseline or extended sequential (SOF0/SOF1), 8-bit samples, 1 or 3 components, no Adobe
    (APP14) colour transform marker, ending with the EOI marker; anything else goes to PIL.

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (8, 8)).save(buf, "JPEG")
    >>> device_decodable(buf.getvalue()), device_decodable(buf.getvalue()[:-2])
    (True, False)
    >>> buf = io.BytesIO(); Image.new("RGB", (8, 8)).save(buf, "JPEG", progressive=True)
    >>> device_decodable(buf.getvalue())
    False
    """
    return jpeg_frame_size(data) is not None


def jpeg_frame_size(data) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG the device decoder takes (see :func:`device_decodable`), else ``None``.

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (50, 37)).save(buf, "JPEG")
    >>> jpeg_frame_size(buf.getvalue())
    (50, 37)
    """
    if isinstance(data, np.ndarray):  # index Python ints, not numpy scalars (runs per file, at GPU rates)
        data = memoryview(np.ascontiguousarray(data, dtype=np.uint8)).cast("B")
    head = bytes(data[:2])
    tail = bytes(data[-2:])
    if head != b"\xff\xd8" or tail != b"\xff\xd9":
        return None
    n, i = len(data), 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if marker == 0xEE:  # Adobe: CMYK/YCCK or a non-default transform
            return None
        if marker in _SOF:
            if i + 10 > n:
                return None
            precision, components = data[i + 4], data[i + 9]
            if marker in (0xC0, 0xC1) and precision == 8 and components in (1, 3):
                return (data[i + 7] << 8) | data[i + 8], (data[i + 5] << 8) | data[i + 6]
            return None
        if marker == 0xDA:  # scan data before any frame header
            return None
        i += 2 + length
    return None


class DeviceBatches:
    """Iterable of ``(x, rows, messages)``: ``x`` uint8 ``(n, h, w, 3)`` on ``device``, ``rows`` the
    pool rows, ``messages[k]`` the reason row ``k`` is unreadable (``""`` when fine; its ``x`` is zero).

    Parameters
    ----------
    pool, tf, size
        The pool, the model's resize/crop steps (:func:`~alwidgets.embed.preprocess.split_transform`)
        and its ``(h, w)`` output.
    batches : list of lists of rows
        Batches in the order they are yielded.
    device : torch.device
    io_workers : int
        Threads that read files (and run the CPU path for the files the device decoder does not take).
    skip : set of rows
        Rows known to be unreadable (``pool.errors``): not read, reported with their reason.
    prefetch : int
        Batches prepared ahead of the consumer.
    decode : {"device", "pil", "pil-full"}
        ``"device"``: JPEGs the device decoder takes are decoded there, the rest with PIL.
        ``"pil"``, ``"pil-full"``: every image with PIL in the I/O threads, as
        :class:`~alwidgets.embed.timm.TimmEmbedder`'s option of that name does it.

    Attributes
    ----------
    counts : collections.Counter
        Images per path so far: ``"device"`` (the batched device decoder), ``"pil"`` (the per-image
        CPU path), ``"error"`` (unreadable).
    fallbacks : int
        Images the device decoder refused, decoded by the CPU path instead.
    """

    def __init__(self, pool, tf, size, batches, device, io_workers: int = 4, skip=frozenset(), prefetch: int = 2,
                 decode: str = "device"):
        if decode not in ("device", "pil", "pil-full"):
            raise ValueError(f"decode must be 'device', 'pil' or 'pil-full', got {decode!r}")
        self.decode = decode
        self.pool, self.tf, self.size, self.batches = pool, tf, tuple(size), batches
        self.device, self.io_workers, self.skip, self.prefetch = device, max(1, int(io_workers)), skip, max(1, prefetch)
        self.fallbacks = 0
        self.counts: Counter = Counter()

    # ------------------------------------------------------------- I/O threads
    def _load_many(self, rows):
        return [self._load(i) for i in rows]

    def _load(self, i):
        """``("jpeg", bytearray)``, ``("pixels", uint8 HWC array)`` or ``("error", reason)``."""
        from ..pool import _reason

        pool = self.pool
        if i in self.skip:
            return "error", pool.errors.get(pool.ids[i], "skipped")
        if self.decode == "device" and pool.paths is not None:
            try:
                with open(pool.paths[i], "rb", buffering=0) as f:
                    data = bytearray(f.read())  # writable: the producer wraps it without a copy
            except OSError as e:
                return "error", _reason(e)
            if not data:
                return "error", "zero-byte file"
            size = jpeg_frame_size(data)
            if size is not None and not self._enlarged(size):
                return "jpeg", data
        return self._cpu(i)

    def _enlarged(self, size) -> bool:
        """Whether the resize step enlarges an image of ``size`` (w, h). Such images go to the CPU path:
        nvJPEG upsamples chroma by repeating samples where libjpeg (PIL) interpolates, and enlarging
        magnifies the difference (32-px CIFAR JPEGs on an H100: minimum cosine 0.71 to the CPU path for
        MobileNet V1, probe accuracy 0.684 instead of 0.707). Small images are cheap to decode anyway."""
        target = decode_target(self.tf, size)
        w, h = target if target is not None else self.size[::-1]
        return w > size[0] or h > size[1]

    def _cpu(self, i):
        """The CPU path for one item: PIL decode (reduced-scale for JPEGs but with ``"pil-full"``) and
        PIL resize/crop."""
        from ..pool import ImageReadError

        try:
            im = read_resized(self.pool, i, self.tf, reduced=self.decode != "pil-full")
        except ImageReadError as e:
            return "error", e.reason
        try:
            return "pixels", to_uint8_hwc(im, self.size)
        except ValueError as e:
            raise ValueError(f"item {self.pool.ids[i]!r}: {e}") from None

    # ---------------------------------------------------------- producer thread
    def _decode(self, datas):
        """Decode a list of JPEG files' contents (bytearrays) on the device; ``None`` where the decoder refused one."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        datas = [torch.frombuffer(d, dtype=torch.uint8) for d in datas]
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device))
        except (RuntimeError, ValueError):  # one bad image fails the whole call: find it
            out = []
            for d in datas:
                try:
                    out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=self.device))
                except (RuntimeError, ValueError):
                    out.append(None)
            return out

    def _prepare(self, rows, loaded):
        import torch

        n, (h, w) = len(rows), self.size
        x = torch.zeros((n, h, w, 3), dtype=torch.uint8, device=self.device)
        msgs = [""] * n
        jpeg = [k for k, (kind, _) in enumerate(loaded) if kind == "jpeg"]
        images = {}  # row position -> uint8 (3, H, W) on the device, resized together
        if jpeg:
            for k, im in zip(jpeg, self._decode([loaded[k][1] for k in jpeg])):
                if im is None:  # the device decoder refused it: the CPU path decides
                    self.fallbacks += 1
                    loaded[k] = self._cpu(rows[k])
                else:
                    images[k] = im
        if images:
            x[list(images)] = resize_crop(self.tf, list(images.values()), (h, w))
            self.counts["device"] += len(images)
        host = [k for k, (kind, _) in enumerate(loaded) if kind == "pixels"]
        if host:
            a = torch.from_numpy(np.stack([loaded[k][1] for k in host]))
            if self.device.type == "cuda":
                a = a.pin_memory()
            x[host] = a.to(self.device, non_blocking=True)
            self.counts["pil"] += len(host)
        for k, (kind, v) in enumerate(loaded):
            if kind == "error":
                msgs[k] = v
                self.counts["error"] += 1
        return x, list(rows), msgs

    def _produce(self, out: queue.Queue, stop: threading.Event):
        import torch

        def put(item):
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        cuda = self.device.type == "cuda"
        try:
            stream = torch.cuda.Stream(self.device) if cuda else None
            with ThreadPoolExecutor(self.io_workers, thread_name_prefix="alwidgets-io") as io, \
                    torch.inference_mode(), (torch.cuda.stream(stream) if cuda else contextlib.nullcontext()):
                pending = deque()
                for rows in self.batches:  # reads of up to two batches in flight
                    step = max(1, math.ceil(len(rows) / (2 * self.io_workers)))  # a few tasks per thread
                    pending.append((rows, [io.submit(self._load_many, rows[k:k + step])
                                           for k in range(0, len(rows), step)]))
                    if len(pending) < 2:
                        continue
                    if stop.is_set() or not self._emit(*pending.popleft(), stream, put):
                        return
                while pending:
                    if stop.is_set() or not self._emit(*pending.popleft(), stream, put):
                        return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(e)

    def _emit(self, rows, futs, stream, put) -> bool:
        import torch

        x, rows, msgs = self._prepare(rows, [r for f in futs for r in f.result()])
        done = None
        if stream is not None:  # the consumer's stream waits for this event, the host does not
            done = torch.cuda.Event()
            done.record(stream)
        return put((x, rows, msgs, done))

    def __iter__(self):
        import torch

        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(out, stop), daemon=True, name="alwidgets-decode")
        worker.start()
        try:
            while True:
                item = out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                x, rows, msgs, done = item
                if done is not None:  # made on the producer's stream, used on this one
                    current = torch.cuda.current_stream(x.device)
                    current.wait_event(done)
                    x.record_stream(current)  # keep its memory until this stream is done with it
                yield x, rows, msgs
        finally:
            stop.set()
            while worker.is_alive():
                try:
                    out.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()
