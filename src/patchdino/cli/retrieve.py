"""``patchdino retrieve``: image retrieval with frozen descriptors.

Two protocols, chosen from the folder (or ``--protocol``):

- ``revisited``: a revisited Oxford or Paris folder (``jpg/`` and a ``gnd*.json``, see
  :mod:`patchdino.eval.retrieval.revisited`); query images cropped to their boxes, mAP of the Easy,
  Medium and Hard settings.
- ``labels``: any labelled data set; each test image queries the training set and images of
  its class are the right answers; mAP@R, R-precision and Recall@k.

``--convert-gnd gnd_roxford5k.pkl --output gnd_roxford5k.json`` writes the JSON ground truth
from the official pickle, read without running any code from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from patchdino.cli.common_options import add_data_argument, add_subset_arguments, check_positive
from patchdino.cli.errors import UsageError
from patchdino.cli.outputs import write_json
from patchdino.cli.retrieval_options import (
    add_model_options,
    check_descriptor,
    record_of,
    require,
)

PROTOCOLS = ("auto", "revisited", "labels")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(
        parser, "revisited benchmark folder, or any labelled data set", required=False
    )
    parser.add_argument(
        "--protocol",
        default="auto",
        metavar="|".join(PROTOCOLS),
        help="revisited when the folder holds jpg/ and gnd*.json (or --ground-truth is "
        "given), else labels",
    )
    parser.add_argument(
        "--ground-truth", type=Path, help="JSON ground truth of a revisited benchmark"
    )
    parser.add_argument(
        "--convert-gnd",
        type=Path,
        metavar="GND.pkl",
        help="convert an official gnd_*.pkl to JSON (written to --output) and exit",
    )
    add_subset_arguments(
        parser, "labels: seeded subset of the database", "labels: seeded subset of the queries"
    )
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[1, 5, 10], help="labels: cut-offs of Recall@k"
    )
    add_model_options(parser)


def convert(args: argparse.Namespace) -> int:
    """``--convert-gnd``: the JSON form of an official ground-truth pickle."""
    from patchdino.cli.outputs import check_output
    from patchdino.eval.retrieval.revisited import convert_ground_truth

    require(args, "--convert-gnd", "--output")
    check_output(args.output, ".json")
    truth = convert_ground_truth(args.convert_gnd, args.output)
    print(f"{len(truth.queries)} queries, {len(truth.images)} database images -> {args.output}")
    return 0


def protocol_of(args: argparse.Namespace) -> str:
    """The protocol asked for, or the one the folder calls for."""
    from patchdino.eval.retrieval.revisited import is_revisited

    if args.protocol not in PROTOCOLS:
        raise UsageError(f"--protocol must be one of {', '.join(PROTOCOLS)}")
    if args.protocol != "auto":
        return str(args.protocol)
    return "revisited" if args.ground_truth is not None or is_revisited(args.data) else "labels"


def revisited(args: argparse.Namespace) -> dict[str, Any]:
    """mAP of the revisited protocol's settings."""
    from patchdino.cli.common_options import extraction, prepare, usage_errors
    from patchdino.cli.retrieval_options import descriptor
    from patchdino.eval.common.eval_data import file_canvas
    from patchdino.eval.retrieval.descriptors import encode
    from patchdino.eval.retrieval.revisited import (
        BoxedImages,
        RevisitedError,
        check_images,
        find_ground_truth,
        read_ground_truth,
        revisited_map,
    )

    path = args.ground_truth or find_ground_truth(args.data)
    if path is None:
        raise RevisitedError(f"{args.data} holds no gnd*.json; give --ground-truth")
    truth = read_ground_truth(path)
    db_files, query_files = check_images(args.data, truth)
    setup = prepare(args, kind="imagefolder")
    channels = setup.channels or 3
    canvas = file_canvas(setup.image_size, setup.config.data.canvas)
    database = BoxedImages(db_files, [None] * len(db_files), channels, canvas)
    queries = BoxedImages(query_files, [t.box for t in truth.truth], channels, canvas)
    model = descriptor(setup, args)
    with usage_errors():
        db_feats, stats = encode(setup, database, model, extraction(args), "database")
        q_feats, _ = encode(setup, queries, model, extraction(args), "queries", stats)
    result = revisited_map(q_feats @ db_feats.T, truth)
    print("  ".join(f"{name} {value:.2f}" for name, value in result.items()))
    return {
        "map": result,
        "ground_truth": str(path),
        "feature_dim": int(db_feats.shape[1]),
        "num_queries": len(query_files),
        "num_database": len(db_files),
        **record_of(setup, args),
    }


def labels(args: argparse.Namespace) -> dict[str, Any]:
    """mAP@R, R-precision and Recall@k of label-based retrieval."""
    import torch.nn.functional as F

    from patchdino.cli.common_options import extraction, prepare, usage_errors
    from patchdino.cli.retrieval_options import descriptor
    from patchdino.eval.common.pipeline import labelled_features
    from patchdino.eval.retrieval.retrieval_metrics import label_retrieval

    check_positive(max_train=args.max_train, max_test=args.max_test, ks=min(args.ks))
    setup = prepare(args)
    model = descriptor(setup, args)
    with usage_errors():
        data = labelled_features(
            setup, model, "label retrieval", extraction(args), args.max_train, args.max_test
        )
    (db_feats, db_labels), (q_feats, q_labels) = data.train, data.test
    if max(args.ks) > db_feats.shape[0]:
        raise UsageError(f"--ks {max(args.ks)} exceeds the {db_feats.shape[0]} database images")
    result = label_retrieval(
        F.normalize(q_feats, dim=1),
        q_labels,
        F.normalize(db_feats, dim=1),
        db_labels,
        ks=sorted(set(args.ks)),
        device=setup.device,
    )
    print(
        f"mAP@R {result.map_at_r:.2f}  R-precision {result.r_precision:.2f}  "
        + "  ".join(f"R@{k} {v:.2f}" for k, v in result.recall.items())
    )
    return {
        "map_at_r": result.map_at_r,
        "r_precision": result.r_precision,
        "recall": {str(k): v for k, v in result.recall.items()},
        "kind": setup.kind,
        "num_queries": result.num_queries,
        "skipped_images": data.skipped,
        "num_database": int(db_feats.shape[0]),
        "num_classes": len(data.classes),
        "feature_dim": int(db_feats.shape[1]),
        **record_of(setup, args),
    }


def run(args: argparse.Namespace) -> int:
    import time

    from patchdino.cli.outputs import check_output

    if args.convert_gnd is not None:
        return convert(args)
    require(args, "retrieve", "--data", "--weights", "--output")
    check_output(args.output, ".json")
    check_positive(batch_size=args.batch_size, image_size=args.image_size)
    check_descriptor(args)
    protocol = protocol_of(args)
    started = time.perf_counter()
    record = revisited(args) if protocol == "revisited" else labels(args)
    record = {
        "protocol": protocol,
        **record,
        "data": str(args.data),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(args.output, record)
    print(f"results: {args.output}")
    return 0
