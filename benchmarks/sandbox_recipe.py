"""Explore sandbox CLIP recipes by their task-vector statistics and expert accuracy only.

For each variant (recipe overrides of ``conf/model/sandbox_clip.yaml``) it pretrains one
sandbox CLIP, fine-tunes one expert per task of ``benchmark`` at each fine-tuning lr, and
prints, per (variant, lr): zero-shot and expert test accuracy (average and minimum), the
relative task-vector norm ``||tau_t|| / ||theta_0||`` (image encoder) and the pairwise
cosines of the task vectors. No merged model is scored: a recipe is chosen on these
figures, never on merged results (issue 12). Uses the zoo's own ``pretrain``/``finetune``
(on ``--device``; a GPU run differs from the zoo's CPU build in the last bits, so the
chosen recipe is then built and measured by the zoo itself). Generated tasks unless
``--real-images auto|true`` (``benchmark.real_images``), data cached under ``--cache``.
``--pretrained FILE`` starts every variant from that CLIP (a built zoo's
``pretrained.safetensors``, of the variant's recipe) instead of pretraining: a quick
comparison of fine-tuning settings on one zoo.

    python benchmarks/sandbox_recipe.py --device cuda --lrs 1e-3 5e-4 \\
        --variant base= --variant long=pretrain.steps=2400 \\
        --variant wide=vision.width=256,pretrain.steps=2400 --jobs 3 --out DIR

Each variant runs in its own process (``--jobs`` at once, one torch thread each); results
are appended to ``DIR/recipes.jsonl`` as they finish and summarised in ``DIR/recipes.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import dataclasses
import json
import multiprocessing
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from safetensors.torch import load_file

from evaluation.cache import cache_root
from evaluation.clip.heads import zeroshot_head
from evaluation.sandbox import zoo as sandbox
from experiments.config import register_schemas
from experiments.task_vector_stats import task_vector_stats

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(recipe_overrides: list[str], cache: str, real_images: str = "false") -> tuple:
    register_schemas()
    overrides = [
        "model=sandbox_clip", "benchmark=sandbox8", f"benchmark.real_images={real_images}",
        f"cache_dir={cache or 'null'}", *[f"model.recipe.{o}" for o in recipe_overrides],
    ]  # fmt: skip
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config", overrides=overrides)
    return instantiate(cfg.model), instantiate(cfg.benchmark)


@torch.no_grad()
def _accuracy(model, tokenizer, task, visual_state, images, labels, device) -> float:
    head = zeroshot_head(model, tokenizer, task.classnames, task.templates, task.name).to(device)
    visual = copy.deepcopy(model.visual)
    visual.load_state_dict(visual_state)
    visual.eval()
    correct = 0
    for i in range(0, len(labels), 512):
        x = sandbox.preprocess(images[i : i + 512].to(device))
        correct += int((head(visual(x)).argmax(-1).cpu() == labels[i : i + 512]).sum())
    return 100.0 * correct / len(labels)


def run_variant(
    name: str,
    overrides: list[str],
    lrs: list[float],
    cache: str,
    device: str,
    out: Path,
    threads: int = 1,
    real_images: str = "false",
    pretrained: Path | None = None,
) -> list:
    """Pretrain once (or load ``pretrained``), fine-tune every task at every lr; one result
    dict per lr, each also appended to ``out`` (JSON lines) as soon as it is known."""
    torch.set_num_threads(threads)
    zoo, benchmark = _compose(overrides, cache, real_images)
    recipe, tok = zoo.recipe, zoo.tokenizer
    start = time.perf_counter()
    model = sandbox.build_model(recipe, tok.vocab_size).to(device)
    if pretrained:
        model.load_state_dict(load_file(pretrained, device=device))
    else:
        sandbox.pretrain(model, tok, recipe, benchmark.task_order(), progress=False)
    pretrain_s = time.perf_counter() - start
    theta0 = {k: v.detach().cpu().clone() for k, v in model.visual.state_dict().items()}
    tasks = benchmark.tasks()
    env_cache = cache_root(cache)
    splits = {t.name: (benchmark.load_split(t, "train", env_cache),
                       benchmark.load_split(t, "test", env_cache)) for t in tasks}  # fmt: skip
    gens = {t.name: benchmark.sandbox_task(t.name) for t in tasks}
    zeroshot = {
        t.name: _accuracy(model, tok, gens[t.name], theta0, *splits[t.name][1], device)
        for t in tasks
    }
    rows = []
    for lr in lrs:
        ft = dataclasses.replace(recipe.finetune, lr=lr)
        r = dataclasses.replace(recipe, finetune=ft)
        experts, acc = {}, {}
        t0 = time.perf_counter()
        for t in tasks:
            state = sandbox.finetune(model, tok, gens[t.name], r, splits[t.name][0], False)
            experts[t.name] = state
            acc[t.name] = _accuracy(model, tok, gens[t.name], state, *splits[t.name][1], device)
        stats = task_vector_stats(theta0, experts)
        off = stats.off_diagonal()
        rows.append({
            "variant": name, "overrides": overrides, "lr": lr, "device": device,
            "pretrain_s": round(pretrain_s, 1), "finetune_s": round(time.perf_counter() - t0, 1),
            "zeroshot": zeroshot, "expert": acc, "theta_norm": stats.theta_norm,
            "relative_norms": dict(zip(stats.tasks, stats.relative_norms, strict=True)),
            "cosine_min": min(off), "cosine_mean": sum(off) / len(off), "cosine_max": max(off),
        })  # fmt: skip
        with open(out, "a") as fh:
            fh.write(json.dumps(rows[-1]) + "\n")
    return rows


def _row(r: dict) -> str:
    zs, ex, rel = r["zeroshot"].values(), r["expert"].values(), r["relative_norms"].values()
    avg = lambda v: sum(v) / len(v)  # noqa: E731
    return (
        f"| {r['variant']} | {', '.join(r['overrides']) or '-'} | {r['lr']:g} | {avg(zs):.1f} | "
        f"{avg(ex):.1f} | {min(ex):.1f} | {min(rel):.3f}-{max(rel):.3f} | "
        f"{r['cosine_min']:.3f} / {r['cosine_mean']:.3f} / {r['cosine_max']:.3f} | "
        f"{r['theta_norm']:.1f} | {r['pretrain_s']:.0f} + {r['finetune_s']:.0f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--variant",
        action="append",
        required=True,
        help="NAME=key=value,key=value (recipe keys, e.g. pretrain.steps=2400)",
    )
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3])
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--real-images", default="false", choices=["false", "auto", "true"])
    p.add_argument("--pretrained", type=Path, help="skip pretraining: this CLIP's weights")
    p.add_argument("--cache", default=None, help="cache root (default: the run config's)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    variants = {}
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        variants[name] = [o for o in rest.split(",") if o]
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "recipes.jsonl"
    # draw the benchmark's data once before the workers start (they share the cache)
    _, bench = _compose([], args.cache, args.real_images)
    for t in bench.tasks():
        for split in ("train", "test"):
            bench.load_split(t, split, cache_root(args.cache))
    print(f"device {args.device}, {args.jobs} jobs, {args.threads} torch threads each", flush=True)
    header = ("| variant | overrides | ft lr | zero-shot avg | expert avg | expert min | "
              "rel. norm | cosine min / mean / max | theta_0 norm | pretrain + fine-tune s |\n"
              "|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    rows = []
    with concurrent.futures.ProcessPoolExecutor(
        args.jobs, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        futures = {
            pool.submit(
                run_variant,
                n,
                o,
                args.lrs,
                args.cache,
                args.device,
                jsonl,
                args.threads,
                args.real_images,
                args.pretrained,
            ): n  # fmt: skip
            for n, o in variants.items()
        }
        for f in concurrent.futures.as_completed(futures):
            for r in f.result():
                rows.append(_row(r))
                print(rows[-1], flush=True)
    (args.out / "recipes.md").write_text(header + "\n" + "\n".join(sorted(rows)) + "\n")
    print(header + "\n" + "\n".join(sorted(rows)))


if __name__ == "__main__":
    main()
