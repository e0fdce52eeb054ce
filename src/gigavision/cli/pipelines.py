"""``gigavision models pipeline create``: publish a detect → crop → classify / embed / segment pipeline as a model.

The declaration, its checks and the model folder are ``models/pipeline.py``; this module only translates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gigavision.cli.common import JsonOpt, WorkspaceOpt, open_ws, out_console, print_json

pipeline_app = typer.Typer(
    help="Pipelines: a detector, then per box a crop classified, embedded or segmented, published as one model.",
    no_args_is_help=True,
)


@pipeline_app.command("create")
def create_cmd(
    name: Annotated[str, typer.Argument(help="The pipeline's model id (what predict and aliases name).")],
    file: Annotated[Path, typer.Option("--file", "-f", help="The declaration (YAML): detect: MODEL, stages: [...].")],
    workspace_opt: WorkspaceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Publish the pipeline declared in FILE as model NAME (task pipeline): every stage model is resolved (an
    alias names the model it points at now), checked and copied in, so the pipeline is self-contained."""
    from gigavision.models.pipeline import publish_pipeline, read_pipeline, read_spec

    spec = read_spec(file)  # a malformed file fails before the workspace is opened
    with open_ws(workspace_opt) as ws:
        info = publish_pipeline(ws, name, spec)
    if json_out:
        print_json({**info.as_dict(), "path": str(info.path)})
        return
    pipeline = read_pipeline(info)
    out_console.print(f"pipeline {info.id}  (detect {pipeline.detector})", highlight=False)
    for stage in pipeline.stages:
        only = f", labels {', '.join(stage.labels)}" if stage.labels else ""
        out_console.print(f"  {stage.name}: {stage.kind} {stage.model}{only}", highlight=False, soft_wrap=True)
    out_console.print(f"path  {info.path}", highlight=False, soft_wrap=True)
