"""Command line: ``alwidgets simulate`` and friends.

Errors in arguments or inputs print one line ``alwidgets: error: ...`` on
stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


class UsageError(Exception):
    """A bad argument or input; reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too)
        raise UsageError(message)


def load_pool(spec: str):
    """Pool from a ``--dataset`` spec: digits | fashion-mnist:DIR | folder:DIR | npz:FILE."""
    from .pool import Pool

    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "digits" and not arg:
        return Pool.digits()
    if kind in ("fashion-mnist", "folder", "npz"):
        if not arg:
            raise UsageError(f"--dataset {kind}: needs a path, e.g. {kind}:PATH")
        try:
            if kind == "fashion-mnist":
                split = "train"
                if "@" in arg:
                    arg, split = arg.rsplit("@", 1)
                return Pool.fashion_mnist(arg, split=split)
            if kind == "folder":
                return Pool.from_folder(arg)
            return Pool.from_npz(arg)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(f"--dataset {spec}: {e}") from None
    raise UsageError(f"unknown --dataset {spec!r}; use digits, fashion-mnist:DIR, folder:DIR or npz:FILE")


def make_embedder(spec: str, args=None):
    """Embedder from an ``--embedder`` spec: pixels | pca:N | timm:MODEL_NAME.

    For ``timm:`` the options ``--checkpoint``, ``--model-kwargs``,
    ``--pretrained-cfg``, ``--device`` and ``--cache-dir`` of ``args`` apply.
    """
    from .embed import PixelEmbedder

    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    timm_opts = {k: getattr(args, k, None) for k in ("checkpoint", "model_kwargs", "pretrained_cfg", "cache_dir")}
    if kind != "timm":
        given = [f"--{k.replace('_', '-')}" for k, v in timm_opts.items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --embedder timm:MODEL_NAME")
    if kind == "pixels" and not arg:
        return PixelEmbedder()
    if kind == "pca":
        try:
            return PixelEmbedder(pca=int(arg))
        except ValueError:
            raise UsageError(f"--embedder pca:N needs an integer N, got {arg!r}") from None
    if kind == "timm":
        from .embed import TimmEmbedder

        if not arg.strip():
            raise UsageError("--embedder timm:MODEL_NAME needs a model name, e.g. timm:resnet50.a1_in1k")
        model_kwargs = _json_dict(timm_opts["model_kwargs"], "--model-kwargs")
        overlay = _json_dict(timm_opts["pretrained_cfg"], "--pretrained-cfg") or None
        ckpt = timm_opts["checkpoint"]
        if ckpt is not None:
            if not Path(ckpt).expanduser().is_file():
                raise UsageError(f"--checkpoint {ckpt}: no such file")
        if "num_classes" in model_kwargs:
            raise UsageError("--model-kwargs: num_classes is fixed to 0 (pooled features)")
        _check_model_kwargs(model_kwargs, TimmEmbedder)
        return TimmEmbedder(arg.strip(), pretrained=True, checkpoint=ckpt, device=getattr(args, "device", None) or "auto",
                            cache_dir=timm_opts["cache_dir"], pretrained_cfg_overlay=overlay,
                            progress=not getattr(args, "no_progress", False), **model_kwargs)
    raise UsageError(f"unknown --embedder {spec!r}; use pixels, pca:N or timm:MODEL_NAME")


# embedder arguments a user may try to pass through --model-kwargs, and the option that sets them
_EMBEDDER_OPTIONS = {"pretrained": "--checkpoint PATH for local weights (pretrained weights are always loaded)",
                     "checkpoint": "--checkpoint", "device": "--device", "cache_dir": "--cache-dir",
                     "pretrained_cfg_overlay": "--pretrained-cfg", "progress": "--no-progress"}


def _check_model_kwargs(model_kwargs: dict, embedder_cls) -> None:
    """Refuse ``--model-kwargs`` keys that are the embedder's own arguments (they would collide)."""
    import inspect

    own = [name for name, p in inspect.signature(embedder_cls).parameters.items()
           if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    for key in model_kwargs:
        if key in own:
            use = _EMBEDDER_OPTIONS.get(key)
            raise UsageError(f"--model-kwargs: {key!r} is not a timm.create_model argument here"
                             + (f"; use {use}" if use else " (alwidgets sets it)"))


def _json_dict(text, option) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{option}: not valid JSON ({e.msg} at column {e.colno}): {text!r}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option}: expected a JSON object like '{{\"pad_type\": \"same\"}}', got {text!r}")
    return value


def embed_pool(pool, embedder, executor="local"):
    """The embedder's output for ``pool``; failures to load weights or read images, or to reach a
    Ray cluster, become usage errors."""
    from .embed import WeightsUnavailableError
    from .pool import ImageReadError

    usage = (WeightsUnavailableError, ImageReadError, FileNotFoundError, ValueError)
    if executor != "local":  # no Ray, an unreachable cluster, an embedder that cannot run there
        usage += (ImportError, ConnectionError, TypeError)
    try:
        return embedder.embed(pool, executor=executor)
    except usage as e:
        raise UsageError(str(e).splitlines()[0]) from None
    except RuntimeError as e:
        if "CUDA" in str(e) or "device" in str(e):
            raise UsageError(str(e).splitlines()[0]) from None
        raise


def subsample(pool_targets: np.ndarray, max_items: int | None, seed: int) -> np.ndarray:
    """Random subset of at most ``max_items`` indices (all when None), in pool order.

    Stratified by class when every class can be represented (``max_items`` at least
    the number of classes, and each class known and with two items or more);
    otherwise a plain random subset.

    >>> subsample(np.repeat([0, 1, 2], 4), 6, seed=0).tolist()
    [2, 3, 4, 6, 8, 11]
    >>> len(subsample(np.repeat([0, 1, 2], 4), 2, seed=0))
    2
    """
    n = len(pool_targets)
    if max_items is None or max_items >= n:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    targets = np.asarray(pool_targets)
    counts = np.unique(targets, return_counts=True)[1]
    if np.all(targets >= 0) and max_items >= len(counts) and counts.min() >= 2:
        keep, _ = train_test_split(np.arange(n), train_size=max_items, stratify=targets, random_state=seed)
    else:
        keep = np.random.default_rng(seed).choice(n, max_items, replace=False)
    return np.sort(keep)


DEFAULT_STRATEGIES = {"classification": "random,least_confidence,margin,entropy",
                      "segmentation": "random,coverage,entropy,class_weighted,auto"}
DEFAULT_BUDGETS = "5,10,20,40"
MAX_REPEATS = 1000
"""``--repeats`` above this is refused before any work (each split holds a copy of its test rows)."""
MAX_SPLIT_BYTES = 2 * 1024 ** 3
"""Memory the test splits of a simulation may take together before ``--repeats`` is refused."""
RELATIVE_TARGET = 0.95
"""Without ``--target-acc``, the target is this fraction of the full-pool accuracy."""


def check_simulation_size(args, y, n_features: int) -> None:
    """Refuse ``--max-items`` too small to split ``y`` (the whole pool's labels), and ``--repeats``
    whose splits would not fit in memory."""
    n = len(y) if args.max_items is None else min(len(y), args.max_items)
    n_classes = len(np.unique(y))
    need = max(2 * n_classes, int(np.ceil(n_classes / min(args.test_size, 1 - args.test_size))),
               n_classes * (args.seed_per_class + 1) + n_classes)
    if n < need:
        opt = f"--max-items {args.max_items}" if args.max_items is not None and args.max_items < need \
            else f"--dataset {args.dataset}"
        raise UsageError(f"{opt}: {n} items are too few to simulate {n_classes} classes with --test-size "
                         f"{args.test_size:g} and --seed-per-class {args.seed_per_class}; give at least {need}")
    split_bytes = int(np.ceil(args.test_size * n)) * (n_features * 4 + 16)
    if args.repeats * split_bytes > MAX_SPLIT_BYTES:
        most = max(1, MAX_SPLIT_BYTES // split_bytes)
        raise UsageError(f"--repeats {args.repeats}: the test splits of {n} x {n_features} features would take "
                         f"{args.repeats * split_bytes / 1024 ** 3:.1f} GB; use at most {most}")


def check_output_file(path: str | None, option: str, suffixes=()) -> None:
    """Refuse an output path that cannot be written (a folder, a missing folder) before any work."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name, e.g. {p / ('curves' + (suffixes or ('',))[0])}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: folder {parent} is not writable")


def _int_at_least(low: int):
    """argparse type: an integer >= ``low``."""

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be {'> 0' if low == 1 else f'>= {low}'}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _repeats(text):
    v = _positive_int(text)
    if v > MAX_REPEATS:
        raise argparse.ArgumentTypeError(f"at most {MAX_REPEATS} random splits, got {v}")
    return v


def _budgets(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 5,10,20, got {text!r}") from None
    if not values or any(v < 1 for v in values) or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"expected increasing positive integers like 5,10,20, got {text!r}")
    return values


def _mask_value(text):
    v = _int_at_least(0)(text)
    if v > 255:
        raise argparse.ArgumentTypeError(f"must be an 8-bit mask value 0-255, got {v}")
    return v


def _fraction(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {v}")
    return v


def _open_fraction(text):
    v = _fraction(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="alwidgets", description="Jupyter-native active learning.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    sim = sub.add_parser("simulate", help="replay strategies on labelled data: labels needed to reach a target")
    add_data_args(sim)
    sim.add_argument("--task", choices=("classification", "segmentation"), default="classification",
                     help="classification (one class per item) or segmentation (masks; --dataset segfolder:DIR)")
    sim.add_argument("--strategies", default=None,
                     help=f"comma-separated strategy names (default: {DEFAULT_STRATEGIES['classification']}; "
                          f"segmentation: {DEFAULT_STRATEGIES['segmentation']})")
    sim.add_argument("--target-acc", type=_fraction, default=None,
                     help="absolute target test accuracy, refused if the model cannot reach it with every "
                          f"label (default: {RELATIVE_TARGET * 100:.0f}%% of the full-pool accuracy, printed)")
    sim.add_argument("--batch", type=_positive_int, default=10, help="labels per round (default: 10)")
    sim.add_argument("--seed-per-class", type=_nonneg_int, default=2, help="initial labels per class; 0 = cold start")
    sim.add_argument("--budget", type=_positive_int, default=300, help="total labels (default: 300)")
    sim.add_argument("--repeats", type=_repeats, default=None,
                     help=f"random splits (segmentation: seeds), at most {MAX_REPEATS} (default: 5; segmentation: 3)")
    sim.add_argument("--test-size", type=_open_fraction, default=0.25, help="held-out fraction (default: 0.25)")
    sim.add_argument("--seed", type=_nonneg_int, default=0, help="random seed, an integer >= 0 (default: 0)")
    sim.add_argument("--json", action="store_true", help="print the summary as JSON")
    sim.add_argument("--curves", metavar="CSV", help="write learning curves to this CSV file")
    sim.add_argument("--plot", metavar="HTML", help="write plotly learning curves to this HTML file")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    seg = sim.add_argument_group("segmentation options (--task segmentation)")
    seg.add_argument("--budgets", type=_budgets, default=None,
                     help=f"masks labelled after each round, increasing (default: {DEFAULT_BUDGETS})")
    seg.add_argument("--ignore-index", type=_mask_value, default=None,
                     help="mask value that never trains or scores (default: classes.txt's '# ignore_index=N', "
                          "else 255)")
    seg.add_argument("--iou-at", type=_positive_int, default=None, metavar="N",
                     help="show per-class IoU at this budget (default: the middle budget)")
    seg.add_argument("--model", choices=("decoder", "probe"), default="decoder",
                     help="DenseDecoder (keeps learning; default) or DenseLinearProbe (fast baseline)")
    seg.add_argument("--decoder-steps", type=_positive_int, default=None, metavar="N",
                     help="training steps per decoder fit (default: its schedule, 4 per mask within 100-400)")
    seg.add_argument("--input-scale", type=int, choices=(1, 2, 4), default=None,
                     help="run the timm backbone on images enlarged this many times: finer maps for thin "
                          "objects, at input-scale^2 the compute and cache (default 1)")

    demo = sub.add_parser("demo", help="copy a demo notebook here and open it in JupyterLab")
    demo.add_argument("notebook", nargs="?", default="quickstart", choices=list(DEMOS),
                      help="quickstart: label digits (default); segmentation: paint masks, watch mIoU grow")
    demo.add_argument("--dir", default=".", help="folder to copy the notebook into (default: here)")
    demo.add_argument("--no-launch", action="store_true", help="only copy the notebook; print the command")
    emb = sub.add_parser("embed", help="embed a dataset and save the features (.npy + ids, or .npz) for reuse")
    add_data_args(emb)
    emb.add_argument("--out", required=True, metavar="FILE",
                     help="FILE.npy (ids written to FILE.ids.txt) or FILE.npz (arrays X, y, ids)")
    emb.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    emb.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="where to embed: this process (default) or a Ray cluster (pip install 'alwidgets[ray]')")
    emb.add_argument("--address", metavar="ADDR", default=None,
                     help="with --engine ray: auto | HOST:PORT | ray://HOST:PORT (default: $RAY_ADDRESS, "
                          "else a Ray started on this machine)")
    return parser


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Options that say which pool to load and how to embed it."""
    p.add_argument("--dataset", default="digits",
                   help="digits | fashion-mnist:DIR | folder:DIR | npz:FILE (default: digits); segmentation: "
                        "segfolder:DIR (DIR/images + DIR/masks [+ classes.txt], or DIR/train and DIR/test of those)")
    p.add_argument("--embedder", default="pixels",
                   help="pixels | pca:N | timm:MODEL_NAME (default: pixels)")
    p.add_argument("--max-items", type=_positive_int, default=None,
                   help="stratified random subset of the pool of at most this many items")
    g = p.add_argument_group("timm embedder options")
    g.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="local .safetensors/.pth weights for timm:MODEL_NAME (offline use)")
    g.add_argument("--model-kwargs", metavar="JSON", default=None,
                   help="timm.create_model arguments, e.g. '{\"pad_type\": \"same\"}'")
    g.add_argument("--pretrained-cfg", metavar="JSON", default=None,
                   help="pretrained config overlay: mean, std, interpolation, crop_pct, input_size")
    g.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: auto)")
    g.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="embedding cache (default: $ALWIDGETS_CACHE or ~/.cache/alwidgets/embeddings)")


def load_npz_features(spec: str):
    """(X, y) from ``npz:FILE`` when its ``X`` holds ready-made features (2-d), else None."""
    kind, _, path = spec.partition(":")
    if kind.strip().lower() != "npz" or not path:
        return None
    if not Path(path).is_file():
        raise UsageError(f"--dataset {spec}: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "X" not in f:
                return None
            X = f["X"]  # each f[...] reads (and decompresses) the array again: read it once
            if X.ndim != 2:
                return None
            if "y" not in f:
                raise UsageError(f"--dataset {spec}: simulation needs labels: an array named 'y'")
            return np.asarray(X, dtype=np.float32), f["y"]
    except (OSError, ValueError) as e:
        raise UsageError(f"--dataset {spec}: {e}") from None


def load_features(args, check=None):
    """(X, y) for the dataset and embedder named on the command line.

    ``check(args, y, n_features)`` gets every label of the pool before anything is
    embedded (``n_features`` is 0 while the embedding dimension is not known) and
    once more after embedding.
    """
    ready = load_npz_features(args.dataset)
    if ready is not None:
        X, y = ready
        if check is not None:
            check(args, y, X.shape[1])
        keep = subsample(y, args.max_items, getattr(args, "seed", 0))
        return X[keep], y[keep]
    pool = load_pool(args.dataset)
    if not np.all(pool.targets >= 0):
        raise UsageError(f"--dataset {args.dataset}: simulation needs a label for every item "
                         "(use class sub-folders, or an npz with y)")
    if check is not None:
        check(args, pool.targets, 0)
    keep = subsample(pool.targets, args.max_items, getattr(args, "seed", 0))
    embedder = make_embedder(args.embedder, args)
    if len(keep) < len(pool):  # embed only the items kept
        pool = pool.subset(keep)
    X = embed_pool(pool, embedder)
    if check is not None:
        check(args, pool.targets, X.shape[1])
    return X, pool.targets


def cmd_simulate(args) -> int:
    from .select import available
    from .simulate import simulate, summarize

    if args.task == "segmentation":
        return cmd_simulate_segmentation(args)
    seg_only = [opt for opt, v in (("--budgets", args.budgets), ("--ignore-index", args.ignore_index),
                                   ("--iou-at", args.iou_at), ("--decoder-steps", args.decoder_steps),
                                   ("--input-scale", args.input_scale)) if v is not None]
    if seg_only or args.model != "decoder":
        raise UsageError(f"{(seg_only or ['--model'])[0]} is for --task segmentation")
    if args.dataset.lower().startswith("segfolder:"):
        raise UsageError("--dataset segfolder:DIR holds masks: add --task segmentation")
    args.repeats = 5 if args.repeats is None else args.repeats
    # everything that can be checked is checked before loading: embedding a dataset can take minutes
    strategies = [s.strip() for s in (args.strategies or DEFAULT_STRATEGIES["classification"]).split(",")
                  if s.strip()]
    unknown = [s for s in strategies if s.replace("-", "_").lower() not in available()]
    if unknown:
        raise UsageError(f"unknown strategy {unknown[0]!r}; choose from {', '.join(available())}")
    check_output_file(args.curves, "--curves", (".csv",))
    check_output_file(args.plot, "--plot", (".html",))
    X, y = load_features(args, check=check_simulation_size)
    try:
        res = simulate(X, y, strategies, target_acc=args.target_acc, batch_size=args.batch,
                       seed_per_class=args.seed_per_class, budget=args.budget, repeats=args.repeats,
                       test_size=args.test_size, random_state=args.seed, progress=not args.no_progress)
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if args.target_acc is not None and msg.startswith("target accuracy"):
            msg = f"--target-acc {args.target_acc:g}: {msg}"
        raise UsageError(msg) from None
    full = float(res.full_pool["accuracy"].mean())
    if args.target_acc is None:  # relative target: a fraction of what every label reaches
        target = round(RELATIVE_TARGET * full, 3)
        res.summary = summarize(res.curves, target)
        res.params["target_acc"] = target
        how = f"target accuracy {target:.3f} = {RELATIVE_TARGET:.0%} of the full-pool accuracy " \
              f"(set an absolute one with --target-acc)"
    else:
        how = f"target accuracy {args.target_acc:.3f} (--target-acc)"
    from ._files import atomic_write

    if args.curves:
        atomic_write(args.curves, lambda tmp: res.curves.to_csv(tmp, index=False))
    if args.plot:
        atomic_write(args.plot, lambda tmp: res.plot().write_html(tmp, include_plotlyjs=True))
    head = f"dataset {args.dataset}: {len(X)} items, {res.params['n_classes']} classes, " \
           f"full-pool accuracy {full:.3f}; {how}"
    if args.json:
        print(head, file=sys.stderr)  # stdout stays pure JSON
        print(json.dumps(res.to_records(), indent=2))
    else:
        print(head)
        print(res.to_markdown())
    return 0


def load_segfolder(spec: str, ignore_index=None):
    """``(train SegmentationData, test SegmentationData or None)`` from ``segfolder:DIR``."""
    from .segmentation import from_segmentation_folder
    from .segmentation.data import MaskError

    kind, _, arg = spec.partition(":")
    if kind.strip().lower() != "segfolder" or not arg:
        raise UsageError(f"--task segmentation needs --dataset segfolder:DIR, got {spec!r}")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise UsageError(f"--dataset {spec}: no such folder")
    try:
        if (root / "images").is_dir():
            return from_segmentation_folder(root, ignore_index=ignore_index), None
        if (root / "train" / "images").is_dir() and (root / "test" / "images").is_dir():
            train = from_segmentation_folder(root / "train", ignore_index=ignore_index)
            classes = train.classes
            if not (root / "test" / "classes.txt").is_file() and (root / "train" / "classes.txt").is_file():
                classes = root / "train" / "classes.txt"
            test = from_segmentation_folder(root / "test", ignore_index=train.ignore_index, classes=classes)
            return train, test
    except (MaskError, FileNotFoundError, ValueError) as e:
        raise UsageError(f"--dataset {spec}: {str(e).splitlines()[0]}") from None
    raise UsageError(f"--dataset {spec}: expected {root}/images and {root}/masks, or train/ and test/ folders of those")


def dense_features(data, args):
    """Dense features of a SegmentationData for ``--embedder``: pixels (average-pooled RGB, for
    tests and demos) or timm:MODEL_NAME (a frozen backbone's feature maps, cached)."""
    from .segmentation.features import DenseEmbedder, DenseFeatures

    kind, _, arg = args.embedder.partition(":")
    kind = kind.strip().lower()
    if kind == "pixels" and not arg:
        if args.input_scale not in (None, 1):
            raise UsageError("--input-scale is for --embedder timm:MODEL_NAME (pixel features have no backbone)")
        try:
            return DenseFeatures.from_pixels(data.pool)
        except ValueError as e:   # images of different sizes cannot be stacked
            raise UsageError(f"--embedder pixels: {e}; use --embedder timm:MODEL_NAME") from None
    if kind != "timm" or not arg.strip():
        raise UsageError(f"--task segmentation takes --embedder pixels or timm:MODEL_NAME, got {args.embedder!r}")
    ckpt = args.checkpoint
    if ckpt is not None and not Path(ckpt).expanduser().is_file():
        raise UsageError(f"--checkpoint {ckpt}: no such file")
    model_kwargs = _json_dict(args.model_kwargs, "--model-kwargs")
    overlay = _json_dict(args.pretrained_cfg, "--pretrained-cfg") or None
    cache = None if args.cache_dir is None else Path(args.cache_dir).expanduser() / "dense"
    emb = DenseEmbedder(arg.strip(), checkpoint=ckpt, device=args.device or "auto", pretrained_cfg_overlay=overlay,
                        input_scale=args.input_scale or 1, progress=not args.no_progress,
                        **({} if cache is None else {"cache_dir": cache}), **model_kwargs)
    return embed_pool(data.pool, emb)


def cmd_simulate_segmentation(args) -> int:
    """``alwidgets simulate --task segmentation --dataset segfolder:DIR``: mIoU per budget of masks."""
    from ._files import atomic_write
    from .segmentation.select import SELECTORS
    from .segmentation.simulate import simulate_task
    from .segmentation.task import SegmentationTask

    if args.target_acc is not None:
        raise UsageError("--target-acc is for classification; segmentation reports the masks needed to reach "
                         "90 % and 95 % of the full-pool mIoU")
    strategies = [s.strip().lower().replace("-", "_")
                  for s in (args.strategies or DEFAULT_STRATEGIES["segmentation"]).split(",") if s.strip()]
    unknown = [s for s in strategies if s not in SELECTORS]
    if unknown:
        raise UsageError(f"unknown segmentation strategy {unknown[0]!r}; choose from {', '.join(SELECTORS)}")
    budgets = args.budgets or _budgets(DEFAULT_BUDGETS)
    if args.iou_at is not None and args.iou_at not in budgets:
        raise UsageError(f"--iou-at {args.iou_at}: not one of the budgets {','.join(map(str, budgets))}")
    repeats = 3 if args.repeats is None else args.repeats
    kind, _, arg = args.embedder.partition(":")
    if not ((kind.strip().lower() == "pixels" and not arg) or (kind.strip().lower() == "timm" and arg.strip())):
        raise UsageError(f"--task segmentation takes --embedder pixels or timm:MODEL_NAME, got {args.embedder!r}")
    check_output_file(args.curves, "--curves", (".csv",))
    check_output_file(args.plot, "--plot", (".html",))
    train, test = load_segfolder(args.dataset, args.ignore_index)
    if args.max_items is not None and args.max_items < len(train):
        train = train.subset(np.sort(np.random.default_rng(args.seed).choice(len(train), args.max_items,
                                                                              replace=False)))
    try:
        task = SegmentationTask(train.classes, ignore_index=train.ignore_index)
    except ValueError as e:
        raise UsageError(f"--dataset {args.dataset}: {e}") from None
    n_known = sum(m is not None for m in train.masks)
    n_pool = n_known if test is not None else n_known - max(1, int(round(args.test_size * n_known)))
    if budgets[-1] > n_pool:
        raise UsageError(f"--budgets: the largest budget ({budgets[-1]} masks) exceeds the {n_pool} pool images "
                         f"with a mask" + ("" if test is not None else f" (after holding out --test-size {args.test_size:g})"))
    feats = dense_features(train, args)
    test_feats = None if test is None else dense_features(test, args)
    if args.model == "probe":
        from .segmentation import DenseLinearProbe

        model = DenseLinearProbe(task.n_classes, task.ignore_index)
    else:
        steps = {} if args.decoder_steps is None else {"min_steps": args.decoder_steps, "max_steps": args.decoder_steps}
        model = task.default_model().set_params(**steps)
    try:
        res = simulate_task(feats, train.masks, task, strategies, budgets=budgets, repeats=repeats,
                            test_features=test_feats, test_masks=None if test is None else test.masks,
                            test_size=args.test_size, model=model, random_state=args.seed,
                            progress=not args.no_progress)
    except ValueError as e:
        raise UsageError(str(e).splitlines()[0]) from None
    if args.curves:
        atomic_write(args.curves, lambda tmp: res.curves.to_csv(tmp, index=False))
    if args.plot:
        atomic_write(args.plot, lambda tmp: res.plot().write_html(tmp, include_plotlyjs=True))
    p = res.params
    head = (f"dataset {args.dataset}: {p['n_pool']} pool images, {p['n_test']} test images "
            f"({'test/' if test is not None else f'--test-size {args.test_size:g}'}), {p['n_classes']} classes, "
            f"ignore index {p['ignore_index']}; full-pool mIoU {res.full_pool_miou():.1f} "
            f"({p['n_pool']} masks, {p['model']}); {repeats} seed(s)")
    if args.json:
        print(head, file=sys.stderr)  # stdout stays pure JSON
        print(json.dumps(res.to_records(args.iou_at), indent=2))
    else:
        print(head)
        print(res.to_markdown(args.iou_at))
    return 0


def cmd_embed(args) -> int:
    """Embed a dataset once and save the features (and ids) for reuse."""

    out = Path(args.out)
    if out.suffix not in (".npy", ".npz"):
        raise UsageError(f"--out {args.out}: use a .npy file (ids go beside it) or a .npz file (X, y, ids)")
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {out.parent} does not exist")
    if args.address is not None and args.engine != "ray":
        raise UsageError("--address only applies to --engine ray")
    executor = "local"
    if args.engine == "ray":
        from .embed.ray import RayExecutor

        executor = RayExecutor(address=args.address)
    pool = load_pool(args.dataset)
    if args.max_items is not None and args.max_items < len(pool):
        pool = pool.subset(subsample(pool.targets, args.max_items, 0))
    if any("\n" in i for i in pool.ids):
        raise UsageError(f"--dataset {args.dataset}: item ids contain line breaks; cannot write them one per line")
    X = embed_pool(pool, make_embedder(args.embedder, args), executor)
    if out.suffix == ".npz":
        np.savez(out, X=X, y=pool.targets, ids=np.array(pool.ids, dtype=str))
        print(f"wrote {X.shape[0]} x {X.shape[1]} embeddings, targets and ids to {out}")
    else:
        np.save(out, X)
        ids_path = out.with_suffix(".ids.txt")
        ids_path.write_text("".join(f"{i}\n" for i in pool.ids), encoding="utf-8")
        print(f"wrote {X.shape[0]} x {X.shape[1]} embeddings to {out} and their ids to {ids_path}")
    if pool.errors:
        print(f"{len(pool.errors)} unreadable item(s) skipped (zero rows): {', '.join(list(pool.errors)[:5])}",
              file=sys.stderr)
    return 0


DEMOS = {"quickstart": "01_quickstart.ipynb", "segmentation": "04_segmentation.ipynb"}


def demo_notebook(name: str) -> Path:
    """The demo notebook ``name`` (a key of ``DEMOS``) shipped in the wheel (or the repo's, in a source checkout)."""
    here, file = Path(__file__).resolve().parent, DEMOS[name]
    for cand in (here / "_notebooks" / file, here.parent / "notebooks" / file):
        if cand.is_file():
            return cand
    raise UsageError(f"the {name} notebook is missing from this installation")


def cmd_demo(args) -> int:
    import shutil
    import subprocess

    target_dir = Path(args.dir)
    if not target_dir.is_dir():
        raise UsageError(f"--dir {target_dir}: no such folder")
    target = target_dir / f"alwidgets_{args.notebook}.ipynb"
    if not target.exists():  # never overwrite a notebook the user may have worked in
        shutil.copyfile(demo_notebook(args.notebook), target)
    # serve the folder and open the notebook itself (a bare path would show the launcher first)
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={target_dir.resolve()}",
           f"--LabApp.default_url=/lab/tree/{target.name}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and Colab run as root; Jupyter refuses otherwise
        cmd.append("--allow-root")
    if args.no_launch:
        print(" ".join(cmd))
        return 0
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        raise UsageError("JupyterLab is not installed: pip install jupyterlab") from None
    return subprocess.call(cmd)


COMMANDS = {"simulate": cmd_simulate, "embed": cmd_embed, "demo": cmd_demo}


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"alwidgets: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
