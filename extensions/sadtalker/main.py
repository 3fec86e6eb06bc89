"""SadTalker, the built-in talking-head extension: what it adds to the studio.

Only the model folder so far: the official checkpoints (`SadTalker_V0.0.2_256.safetensors`, `_512`,
`mapping_00109-model.pth.tar`, `mapping_00229-model.pth.tar`) are listed from `models/SadTalker`. The networks
that load them live in `talking_head/`; the tab, the job type, the API route and the command line are added
here once the pipeline that uses them exists.
"""


def register(api):  # type: ignore[no-untyped-def]
    api.add_model_kind("SadTalker", [".safetensors", ".pth", ".tar", ".pth.tar"])
