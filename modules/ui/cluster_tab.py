"""The Cluster tab: every worker (one per GPU with --cluster, else this machine), what it has loaded and runs,
and the jobs waiting. Refreshed every few seconds while the page is open."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import gradio as gr

from modules.cluster.status import ClusterStatus, cluster_status

if TYPE_CHECKING:
    from modules.services import Services

COLUMNS = ["Worker", "State", "Host", "GPU / device", "Loaded model", "Job", "Tasks done", "Problem"]
REFRESH_S = 3.0


def summary(status: ClusterStatus) -> str:
    live = [w for w in status.workers if w.state != "dead"]
    gpus = sum(1 for w in live if w.gpu)
    where = (f"Cluster **{html.escape(status.cluster)}**: {len(live)} worker(s), {gpus} GPU(s)"
             if status.cluster else "Jobs run on this machine (start with `--cluster` to use a Ray farm).")
    waiting = ", ".join(f"{html.escape(j.type)} `{j.id[:8]}`" for j in status.queue) or "none"
    return f"{where}\n\nRunning: {len(status.running)} · Waiting: {waiting}"


def rows(status: ClusterStatus) -> list[list[object]]:
    return [[w.name, w.state, w.host or "", w.gpu or w.device or "", w.loaded or "", (w.job or "")[:8],
             w.tasks_done, w.error or ""] for w in status.workers]


def build(services: Services) -> None:
    def refresh() -> tuple[str, list[list[object]]]:
        status = cluster_status(services)
        return summary(status), rows(status)

    text, table = refresh()
    overview = gr.Markdown(text, elem_id="cluster_summary")
    workers = gr.Dataframe(value=table, headers=COLUMNS, interactive=False, elem_id="cluster_workers", wrap=True)
    gr.Button("Refresh", elem_id="cluster_refresh").click(refresh, None, [overview, workers], api_visibility="private")
    gr.Timer(REFRESH_S).tick(refresh, None, [overview, workers], api_visibility="private", show_progress="hidden")
