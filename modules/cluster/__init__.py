"""Running the job queue on a farm of GPU machines through Ray (`--cluster`).

Nothing here is imported without `--cluster`, so a single-machine studio never loads Ray. The pieces:
`executor` (the job queue's executor: splits, schedules, streams progress, retries), `pool` (the Ray actors,
one per GPU), `worker` (the actor: a whole engine on its node), `scheduling` (which worker takes which task),
`split` (batch count over workers, and the results merged back), `protocol` (what crosses the network).
"""
