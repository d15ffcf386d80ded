"""Enter -> refit -> next image in the mask painter, at about 100 masks (issue 15's target: <= 3 s on 2 cores).

A segmentation Session on CamVid train (MobileNet V1 features at strides 8/16/32, raw as the default
:class:`~alwidgets.segmentation.DenseDecoder` reads them, or the study's cached PCA projection with
``--components 48,64,64``; the default schedule), scored on 40 test
images, starts from ``--masks`` masks. Then the painter (kernel side, :class:`MaskSessionView`) saves a
batch of 8 masks, one Enter at a time, in each refit mode, inside an asyncio event loop as in a kernel:

* ``now`` (the baseline): the submit refits and scores before the next image is shown;
* ``background`` (what a notebook gets): the submit returns once the store has committed, the next
  image is shown at once, and the refit lands on the kernel's event loop while the labeller paints.

Per Enter: Enter -> next image ready (the painter's traits written), Enter -> refit with that mask
landed (the ``"fit"`` event; the shown image's prediction, what ``p`` pre-fills, refreshed), Enter ->
metrics (the ``"change"`` event), and the decoder's training steps. Between Enters the loop waits for
the metrics (a labeller needs minutes per mask). Medians are printed; ``--json`` writes them too.

Run:  python benchmarks/refit_latency.py [--masks 99] [--enters 8] [--input-scale 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def study():
    spec = importlib.util.spec_from_file_location("segmentation_study", REPO / "benchmarks" / "segmentation_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load(n_test: int, input_scale: int = 1, components: str = "none"):
    st = study()
    from alwidgets.segmentation import camvid, mobilenet_v1

    root = SHARED / "data" / "camvid"
    if not root.is_dir():
        raise SystemExit(f"needs CamVid at {root}")
    train, test = camvid(root, "train"), camvid(root, "test")
    emb = mobilenet_v1(str(SHARED / "weights" / "mobilenetv1_100.coral_in1k.safetensors"), progress=False,
                       precision="fp32", input_scale=input_scale)
    ptr, pte = st.projected(emb, train, test, components)
    return train, ptr, pte.subset(range(n_test)), test.masks[:n_test]


async def run_mode(mode, train, ptr, test, n_start, enters, seed):
    from alwidgets import Session
    from alwidgets.segmentation import DenseDecoder, mask_to_png
    from alwidgets.widgets.view import MaskSessionView

    s = Session(train, embeddings=ptr, model=DenseDecoder(11, 11, n_components=None, random_state=seed),
                store=":memory:", selector="random", test=test, refit=mode, random_state=seed)
    b = s.next_batch(n_start)
    t0 = time.perf_counter()
    s.submit({k: train.masks[train.pool.index_of(k)] for k in b})
    s.wait()
    start_fit = time.perf_counter() - t0
    fits, changes = [], []
    s.on("fit", lambda f: fits.append(time.perf_counter()))
    s.on("change", lambda m: changes.append((time.perf_counter(), m)))
    view = MaskSessionView(s)
    painter = view.show(enters).painter   # a Session: the painter above its live panels
    rows = []
    done = "refitted" if mode == "background" else "saved"   # the status line of the scored refit
    for _ in range(enters):
        item = painter.current
        png = mask_to_png(train.masks[train.pool.index_of(item)])
        nf, nc = len(fits), len(changes)
        t0 = time.perf_counter()
        view._submit(item, png)
        t_next = time.perf_counter() - t0
        while len(fits) == nf or not any(m.startswith(done) for _, m in changes[nc:]):
            await asyncio.sleep(0.005)
        t_fit = fits[nf] - t0
        t_scores = next(t for t, m in changes[nc:] if m.startswith(done)) - t0
        rows.append({"next_s": t_next, "fit_s": t_fit, "scores_s": t_scores,
                     "steps": int(s.model_.n_steps_), "n_masks": int(s.fitted_.n_labels),
                     "miou": s.metrics_["miou"]})
    s.close()
    return start_fit, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=99, help="masks labelled before the painter opens")
    ap.add_argument("--enters", type=int, default=8)
    ap.add_argument("--test", type=int, default=40, help="CamVid test images scored after each refit")
    ap.add_argument("--modes", default="now,background")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--input-scale", type=int, default=1, help="the backbone on images enlarged this many times")
    ap.add_argument("--components", default="none",
                    help="none: the raw maps (the default decoder); 48,64,64: the PCA projection used before 27 Nov")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    train, ptr, pte, test_masks = load(args.test, args.input_scale, args.components)
    out = {"cpus": os.cpu_count(), "masks": args.masks, "enters": args.enters, "components": args.components,
           "modes": {}}
    for mode in args.modes.split(","):
        load0 = os.getloadavg()
        start_fit, rows = asyncio.run(run_mode(mode, train, ptr, (pte, test_masks), args.masks, args.enters,
                                               args.seed))
        med = {k: statistics.median(r[k] for r in rows) for k in ("next_s", "fit_s", "scores_s", "steps")}
        out["modes"][mode] = {"start_fit_s": start_fit, "median": med, "enters": rows,
                              "load": [load0, os.getloadavg()]}
        print(f"{mode:>10}: {args.masks} masks fitted in {start_fit:.1f} s; per Enter at {rows[0]['n_masks']}-"
              f"{rows[-1]['n_masks']} masks (median of {len(rows)}): next image {med['next_s'] * 1000:.0f} ms, "
              f"refit landed {med['fit_s']:.2f} s ({med['steps']:.0f} steps), metrics {med['scores_s']:.2f} s; "
              f"mIoU {rows[-1]['miou']:.1%}; load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    m = out["modes"]
    if "now" in m and "background" in m:
        now, bg = m["now"]["median"], m["background"]["median"]
        out["ratio_background_over_now"] = {k: bg[k] / now[k] for k in ("next_s", "fit_s")}
        print(f"background / now: next image {bg['next_s'] / now['next_s']:.3f}x, "
              f"refit landed {bg['fit_s'] / now['fit_s']:.2f}x (target: next image with the refitted model <= 3 s)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    sys.exit(main())
