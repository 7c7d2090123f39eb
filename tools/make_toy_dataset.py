#!/usr/bin/env python
"""
Generate the synthetic toy segmentation dataset (see ``segcommon/data/datasets/toy.py``).

Example:
    python tools/make_toy_dataset.py --output datasets/toy
"""
import argparse
import os
import sys
import time

# allow running from a checkout without installing the project
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segcommon.data.datasets.toy import (  # noqa: E402
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    generate_toy_dataset,
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--output",
        default=os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "toy"),
        help="output directory (default: $DETECTRON2_DATASETS/toy)",
    )
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    generate_toy_dataset(
        args.output,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed,
    )
    print(
        f"Wrote {args.num_train} train + {args.num_val} val images "
        f"({args.image_size}x{args.image_size}) to {args.output} "
        f"in {time.perf_counter() - start:.2f}s"
    )


if __name__ == "__main__":
    main()
