"""Command line: ``alwidgets simulate`` and friends.

Errors in arguments or inputs print one line ``alwidgets: error: ...`` on
stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys

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
    """Embedder from an ``--embedder`` spec: pixels | pca:N."""
    from .embed import PixelEmbedder

    kind, _, arg = spec.partition(":")
    if kind == "pixels" and not arg:
        return PixelEmbedder()
    if kind == "pca":
        try:
            return PixelEmbedder(pca=int(arg))
        except ValueError:
            raise UsageError(f"--embedder pca:N needs an integer N, got {arg!r}") from None
    raise UsageError(f"unknown --embedder {spec!r}; use pixels or pca:N")


def embed_pool(pool, embedder):
    """Features for ``pool``: the arrays themselves for feature npz files, else the embedder's output."""
    return embedder.embed(pool)


def subsample(pool_targets: np.ndarray, max_items: int | None, seed: int) -> np.ndarray:
    """Stratified random subset of at most ``max_items`` indices (all when None)."""
    n = len(pool_targets)
    if max_items is None or max_items >= n:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(n), train_size=max_items, stratify=pool_targets, random_state=seed)
    return np.sort(keep)


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _nonneg_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _fraction(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="alwidgets", description="Jupyter-native active learning.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    sim = sub.add_parser("simulate", help="replay strategies on labelled data: labels needed to reach a target")
    add_data_args(sim)
    sim.add_argument("--strategies", default="random,least_confidence,margin,entropy",
                     help="comma-separated strategy names (default: %(default)s)")
    sim.add_argument("--target-acc", type=_fraction, default=0.9, help="target test accuracy (default: 0.9)")
    sim.add_argument("--batch", type=_positive_int, default=10, help="labels per round (default: 10)")
    sim.add_argument("--seed-per-class", type=_nonneg_int, default=2, help="initial labels per class; 0 = cold start")
    sim.add_argument("--budget", type=_positive_int, default=300, help="total labels (default: 300)")
    sim.add_argument("--repeats", type=_positive_int, default=5, help="random splits (default: 5)")
    sim.add_argument("--test-size", type=_fraction, default=0.25, help="held-out fraction (default: 0.25)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sim.add_argument("--json", action="store_true", help="print the summary as JSON")
    sim.add_argument("--curves", metavar="CSV", help="write learning curves to this CSV file")
    sim.add_argument("--plot", metavar="HTML", help="write plotly learning curves to this HTML file")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Options that say which pool to load and how to embed it."""
    p.add_argument("--dataset", default="digits",
                   help="digits | fashion-mnist:DIR | folder:DIR | npz:FILE (default: digits)")
    p.add_argument("--embedder", default="pixels", help="pixels | pca:N (default: pixels)")
    p.add_argument("--max-items", type=_positive_int, default=None,
                   help="stratified random subset of the pool of at most this many items")


def load_npz_features(spec: str):
    """(X, y) from ``npz:FILE`` when its ``X`` holds ready-made features (2-d), else None."""
    kind, _, path = spec.partition(":")
    if kind.strip().lower() != "npz" or not path:
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if "X" not in f or f["X"].ndim != 2:
                return None
            if "y" not in f:
                raise UsageError(f"--dataset {spec}: simulation needs labels: an array named 'y'")
            return np.asarray(f["X"], dtype=np.float32), f["y"]
    except (OSError, ValueError) as e:
        raise UsageError(f"--dataset {spec}: {e}") from None


def load_features(args):
    """(X, y) for the dataset and embedder named on the command line."""
    ready = load_npz_features(args.dataset)
    if ready is not None:
        X, y = ready
        keep = subsample(y, args.max_items, getattr(args, "seed", 0))
        return X[keep], y[keep]
    pool = load_pool(args.dataset)
    if not np.all(pool.targets >= 0):
        raise UsageError(f"--dataset {args.dataset}: simulation needs a label for every item "
                         "(use class sub-folders, or an npz with y)")
    keep = subsample(pool.targets, args.max_items, getattr(args, "seed", 0))
    X = embed_pool(pool, make_embedder(args.embedder, args))
    return X[keep], pool.targets[keep]


def cmd_simulate(args) -> int:
    from .simulate import simulate

    X, y = load_features(args)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    from .select import available

    unknown = [s for s in strategies if s.replace("-", "_").lower() not in available()]
    if unknown:
        raise UsageError(f"unknown strategy {unknown[0]!r}; choose from {', '.join(available())}")
    try:
        res = simulate(X, y, strategies, target_acc=args.target_acc, batch_size=args.batch,
                       seed_per_class=args.seed_per_class, budget=args.budget, repeats=args.repeats,
                       test_size=args.test_size, random_state=args.seed, progress=not args.no_progress)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.curves:
        res.curves.to_csv(args.curves, index=False)
    if args.plot:
        res.plot().write_html(args.plot, include_plotlyjs=True)
    if args.json:
        print(json.dumps(res.to_records(), indent=2))
    else:
        print(f"dataset {args.dataset}: {len(X)} items, {res.params['n_classes']} classes, "
              f"full-pool accuracy {res.full_pool['accuracy'].mean():.3f}")
        print(res.to_markdown())
    return 0


COMMANDS = {"simulate": cmd_simulate}


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
