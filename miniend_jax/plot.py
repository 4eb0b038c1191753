"""Plot metrics of one or more runs from their `metrics.jsonl` files.

  python -m miniend_jax.plot --out=docs/curves.png --keys=loss/logit,loss/decoder_self WORKDIR [WORKDIR ...]

One panel per key, one line per workdir (labelled by the workdir's name).
"""

from __future__ import annotations

import argparse
import io
import os

from miniend_jax import files
from miniend_jax.jsonl import read_jsonl


def read_metrics(workdir: str) -> list[dict]:
    return read_jsonl(files.join(workdir, "metrics.jsonl"))


def plot(workdirs: list[str], keys: list[str], out: str, title: str | None = None,
         ylims: list[tuple[float, float] | None] | None = None) -> None:
    """One panel per key (a key may repeat, e.g. with another y range in `ylims`, one per key)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key, ylim in zip(axes[0], keys, ylims or [None] * len(keys)):
        for workdir in workdirs:
            rows = [r for r in read_metrics(workdir) if key in r]
            if rows:
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=os.path.basename(workdir.rstrip("/")),
                        marker="o" if len(rows) < 12 else None, markersize=3)
        ax.set_title(key if ylim is None else f"{key} ({ylim[0]:.2f} to {ylim[1]:.2f})")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format=out.rsplit(".", 1)[-1] if "." in out else "png")
    plt.close(fig)
    files.write_bytes(out, image.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--keys", default="loss")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    plot(args.workdirs, args.keys.split(","), args.out, args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
