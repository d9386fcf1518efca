"""OUT/README.md: a short model card, so a run directory explains itself to whoever finds it."""
from __future__ import annotations

from typing import Any

from violet.config import RunConfig


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = [(key, value) for key, value in metrics.items() if isinstance(value, (int, float))]
    if not rows:
        return "No val split was evaluated at the end of training (the data had none); use `evaluate.py`.\n"
    lines = ["| metric (val) | value |", "|---|---|"]
    lines += [f"| {key} | {value:.2f} |" if isinstance(value, float) else f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def model_card(config: RunConfig, metadata: dict[str, Any], parameters: int) -> str:
    data = metadata.get("data", {})
    store = data.get("clip_store", {})
    annotations = data.get("annotations", {})
    used = ", ".join(f"{name} ({info.get('rows')} rows)" for name, info in annotations.items()) or "unknown"
    backend = {"no": "no distributed backend"}.get(metadata.get("backend"), metadata.get("backend", "?"))
    precision = {"no": "fp32"}.get(metadata.get("precision"), metadata.get("precision", "?"))
    started_from = f"initialised from `{config.init}`" if config.init else "trained from scratch"
    return f"""# {config.task} · {config.model.preset} ({parameters / 1e6:.1f} M parameters)

Run `{metadata.get('run_id', '?')}` (config hash `{metadata.get('config_sha256', '?')}`), {started_from};
{metadata.get('step', '?')} optimizer steps, {metadata.get('samples_seen', '?')} clips seen, on
{metadata.get('processes', '?')} process(es) ({backend}, {precision}).

## Data
`{data.get('dir', '?')}`: {used}. Clips were prepared with {store.get('frames_per_video', '?')} frames per video at
short side {store.get('short_side', '?')} (JPEG quality {store.get('jpeg_quality', '?')}); the model sees
{config.data.num_frames} frames at {config.model.image_size} px.

## Metrics
{_metrics_table(metadata.get('metrics_val', {}))}
## Use it
```python
import violet
m = violet.load("THIS_DIR")
scores = m.encode_texts(["a query"]) @ m.encode_videos(["video.mp4"]).T
```
`python evaluate.py --task {config.task} --data DATA --checkpoint THIS_DIR --split test` measures it;
`python -m violet.index --checkpoint THIS_DIR --videos DIR --out INDEX` indexes a folder of videos.
Every file the run used is here: `config.json` (the resolved config), `run.json` (versions, data hashes),
`tokenizer/`, `model.safetensors`; `checkpoints/step_N/` load the same way.
"""
