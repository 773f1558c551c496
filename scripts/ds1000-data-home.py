"""Fill a DS-1000 data home (config benchmark.ds1000_data_home) where there is internet, e.g. on a login node:

    PYTHONPATH=.ds1000-env python3 scripts/ds1000-data-home.py DIR

15 DS-1000 problems load a data set that their library downloads on first use: seaborn's tips, planets, penguins
and exercise, and scikit-learn's California housing. The sandbox has no network, so the scorer ships DIR into the
home of those programs; this script downloads the files into DIR with the paths the libraries look for (seaborn
0.13: ~/.cache/seaborn/NAME.csv; scikit-learn: ~/scikit_learn_data). It needs the DS-1000 libraries
(envs/ds1000.txt) and the internet (no test runs it: the tests are offline).
"""

from __future__ import annotations

import sys
from pathlib import Path

SEABORN = ("tips", "planets", "penguins", "exercise")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    home = Path(argv[0]).resolve()
    import seaborn
    from sklearn.datasets import fetch_california_housing

    for name in SEABORN:
        seaborn.load_dataset(name, data_home=str(home / ".cache" / "seaborn"))
    fetch_california_housing(data_home=str(home / "scikit_learn_data"))
    for f in sorted(home.rglob("*")):
        if f.is_file():
            print(f.relative_to(home), f.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
