"""``patchdino copydetect``: copy detection with frozen descriptors, and seeded strong copies.

``--make-queries`` writes strong copies of images of a data set and their ground truth
(:mod:`patchdino.eval.retrieval.copies`). Otherwise every query image is described (CLS and
GeM-pooled patch tokens, :mod:`patchdino.eval.retrieval.descriptors`), optionally PCA-whitened
on a distractor folder, and ranks the database by cosine similarity; the result is mAP and
top-1 accuracy (:mod:`patchdino.eval.retrieval.copy_detection`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from patchdino.cli.common_options import check_positive
from patchdino.cli.errors import UsageError
from patchdino.cli.outputs import write_json
from patchdino.cli.retrieval_options import add_model_options, check_descriptor, require


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from patchdino.eval.retrieval.options import CopySettings

    parser.add_argument(
        "--make-queries",
        action="store_true",
        help="write --count strong copies of images of --source to the folder --output, with "
        "their ground truth, instead of evaluating",
    )
    parser.add_argument("--source", help="data set folder of the originals (--make-queries)")
    # the folder of the copies was once --out: still accepted, as the same option
    parser.add_argument("--out", dest="output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=2000, help="number of copies")
    parser.add_argument("--seed", type=int, default=0, help="seed of the copies")
    parser.add_argument(
        "--area",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=CopySettings().area,
        help="range of the share of the original's area each crop keeps (--make-queries)",
    )
    parser.add_argument("--database", help="data set folder of the originals and distractors")
    parser.add_argument(
        "--split",
        metavar="train|test|val",
        help="split of --source / --database (default: test for data sets held in memory such "
        "as IDX files, the folder itself for image files)",
    )
    parser.add_argument("--queries", type=Path, help="folder of the query images")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        help="JSON {query file: original name or [names]} (written by --make-queries)",
    )
    parser.add_argument(
        "--whiten", type=Path, help="folder of distractor images to learn PCA whitening on"
    )
    parser.add_argument("--whiten-dim", type=int, help="dimensions kept by the whitening")
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[1, 5, 10], help="cut-offs of Recall@k"
    )
    add_model_options(
        parser, "JSON file of the results; with --make-queries, the folder of the copies"
    )


def default_split(path: str) -> str:
    """``"test"`` for in-memory kinds, ``"train"`` (the folder itself) for image files."""
    from patchdino.data.datasets import FILE_KINDS
    from patchdino.eval.common.eval_data import data_kind_of

    try:
        return "train" if data_kind_of(path) in FILE_KINDS else "test"
    except ValueError as err:
        raise UsageError(str(err)) from err


def make_queries(args: argparse.Namespace) -> int:
    """``--make-queries``: copies of the originals and their ground truth."""
    from patchdino.cli.outputs import check_output_folder
    from patchdino.data.datasets import build_dataset
    from patchdino.error_text import first_line
    from patchdino.eval.retrieval.copies import CopySettings
    from patchdino.eval.retrieval.copies import make_queries as write_queries

    require(args, "--make-queries", "--source", "--output")
    check_output_folder(args.output, "--output")
    check_positive(count=args.count)
    low, high = args.area
    if not 0 < low <= high <= 1:
        raise UsageError(f"--area needs 0 < MIN <= MAX <= 1, got {low} {high}")
    split = args.split or default_split(args.source)
    try:
        dataset = build_dataset(args.source, "auto", split, canvas=None)
    except ValueError as err:
        raise UsageError(f"--source {args.source}: {first_line(err)}") from err
    made = write_queries(
        dataset,
        dataset.item_names(),
        args.output,
        args.count,
        args.seed,
        CopySettings(area=(low, high)),
        source=f"{args.source} ({split})",
        progress=not args.no_progress,
    )
    print(f"{made.count} copies -> {made.folder}; ground truth {made.ground_truth}")
    print(
        f"evaluate: patchdino copydetect --database {args.source} --split {split} "
        f"--queries {made.folder} --ground-truth {made.ground_truth} --weights W "
        "--output copydetect.json"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from patchdino.cli.common_options import extraction, prepare, usage_errors
    from patchdino.cli.outputs import check_output
    from patchdino.cli.retrieval_options import descriptor, record_of
    from patchdino.eval.common.eval_data import left_out_images
    from patchdino.eval.common.pipeline import open_split
    from patchdino.eval.retrieval.copy_detection import (
        detect_copies,
        read_ground_truth,
        relevance_pairs,
    )
    from patchdino.eval.retrieval.descriptors import PcaWhitening, encode, open_folder

    if args.make_queries:
        return make_queries(args)
    require(
        args, "copydetect", "--database", "--queries", "--ground-truth", "--weights", "--output"
    )
    args.data = args.database  # the option name of the evaluation pipeline
    check_output(args.output, ".json")
    check_positive(whiten_dim=args.whiten_dim, ks=min(args.ks))
    check_descriptor(args)
    truth = read_ground_truth(args.ground_truth)
    started = time.perf_counter()
    split = args.split or default_split(args.data)
    setup = prepare(args)
    with usage_errors():
        database = open_split(setup, split)
        queries = open_folder(setup, args.queries, "train", "queries", database.channels)
        distractors = None
        if args.whiten is not None:
            distractors = open_folder(setup, args.whiten, "train", "whiten", database.channels)
    query_names = queries.item_names()
    pairs = relevance_pairs(query_names, database.item_names(), truth)
    unused = len(set(truth) - set(query_names))
    if unused:
        print(
            f"note: {unused} queries of the ground truth are not in {args.queries}", file=sys.stderr
        )
    if setup.image_size is None:  # pixels of an in-memory data set: its native size
        setup = dataclasses.replace(setup, image_size=int(database[0][1].max()))
    model = descriptor(setup, args)
    with usage_errors():
        db_feats, stats = encode(setup, database, model, extraction(args), "database")
        q_feats, _ = encode(setup, queries, model, extraction(args), "queries", stats)
        if distractors is not None:
            d_feats, _ = encode(setup, distractors, model, extraction(args), "whiten", stats)
            whitening = PcaWhitening.fit(d_feats, args.whiten_dim)
            db_feats, q_feats = whitening(db_feats), whitening(q_feats)
    result = detect_copies(q_feats, db_feats, pairs, tuple(args.ks), device=setup.device)
    seconds = time.perf_counter() - started

    print(f"mAP {result.map:.2f}  top-1 {result.top1:.2f}")
    record = {
        "map": result.map,
        "top1": result.top1,
        "recall": {str(k): v for k, v in result.recall.items()},
        **record_of(setup, args),
        "database": str(args.data),
        "split": split,
        "queries": str(args.queries),
        "ground_truth": str(args.ground_truth),
        "whiten": None if args.whiten is None else str(args.whiten),
        "feature_dim": int(db_feats.shape[1]),
        "num_queries": result.num_queries,
        "skipped_images": {
            "database": left_out_images(database),
            "queries": left_out_images(queries),
            "whiten": [] if distractors is None else left_out_images(distractors),
        },
        "num_database": result.num_database,
        "seconds": round(seconds, 3),
    }
    write_json(args.output, record)
    print(f"results: {args.output}")
    return 0
