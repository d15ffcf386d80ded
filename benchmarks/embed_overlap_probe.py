"""Does nvJPEG decoding overlap a model's forward on the GPU, and what stops it?

Two loops in two threads, each timed alone and then both together: batched
``torchvision.io.decode_jpeg(..., device="cuda")`` on its own stream, and a model's forward on a
fixed batch (fp16 autocast, channels_last) -- once launched from Python op by op, once replayed as
a CUDA graph (one call per batch, so it hardly needs the GIL). If the two run concurrently the
pair's time is close to the longer loop's; if something serialises them, close to the sum.

    python benchmarks/embed_overlap_probe.py --folder /tmp/alwidgets-gpu-check/jpeg500 --model resnet50
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", required=True)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=16)
    args = ap.parse_args(argv)
    import timm
    from torchvision.io import ImageReadMode, decode_jpeg

    dev = torch.device("cuda")
    files = sorted(Path(args.folder).rglob("*.jpg"))
    files = files[:: max(1, len(files) // (4 * args.batch))][: 4 * args.batch]  # spread over the class folders
    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    groups = [datas[k:k + args.batch] for k in range(0, len(datas), args.batch)]
    model = timm.create_model(args.model, pretrained=False, num_classes=0).to(dev).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    n = args.batches

    def fp16():  # no weight-cast cache: a CUDA graph must not capture casts kept across calls
        return torch.autocast("cuda", dtype=torch.float16, cache_enabled=False)

    fwd_stream = torch.cuda.Stream()
    with torch.inference_mode(), fp16(), torch.cuda.stream(fwd_stream):
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                model(x)
        except Exception as e:  # noqa: BLE001 - the eager figures still stand
            print(f"CUDA graph capture failed: {e}")
            graph = None
    torch.cuda.synchronize()

    def forward(replay):
        with torch.inference_mode(), fp16(), torch.cuda.stream(fwd_stream):
            for _ in range(n):
                graph.replay() if replay else model(x)
                fwd_stream.synchronize()  # as the embedder does (.cpu() of each batch's features)

    dec_stream = torch.cuda.Stream()

    def decode():
        with torch.inference_mode(), torch.cuda.stream(dec_stream):
            for k in range(n):
                decode_jpeg(groups[k % len(groups)], mode=ImageReadMode.RGB, device=dev)

    decode()  # nvJPEG start-up

    def timed(*fns):
        torch.cuda.synchronize()
        t = time.perf_counter()
        threads = [threading.Thread(target=f) for f in fns]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        torch.cuda.synchronize()
        return time.perf_counter() - t

    imgs = n * args.batch
    dec = timed(decode)
    print(f"{torch.cuda.get_device_name(dev)}; {args.model}, batch {args.batch}, {n} batches per loop")
    print(f"decode alone {imgs / dec:10,.0f} img/s ({dec:.3f} s)")
    for replay in (False, True) if graph is not None else (False,):
        name = "CUDA graph" if replay else "eager"
        fwd = timed(lambda: forward(replay))
        both = timed(decode, lambda: forward(replay))
        print(f"forward ({name}) alone {imgs / fwd:10,.0f} img/s ({fwd:.3f} s); both together {both:.3f} s "
              f"(max of the two {max(dec, fwd):.3f}, sum {dec + fwd:.3f}): overlap "
              f"{(dec + fwd - both) / min(dec, fwd):.0%} of the shorter loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
