"""SadTalker "digital human" core: our own PyTorch re-implementation of the OpenTalker/SadTalker inference networks.

The classes in `nets/` reproduce the upstream network layouts (commit cd4c046) key for key, so the OFFICIAL
released checkpoints (`SadTalker_V0.0.2_{256,512}.safetensors`, `mapping_00229/00109-model.pth.tar`) load into them
unchanged with strict loading. `weights.py` splits and loads those files and builds the deterministic synthetic
weights that the golden test vectors were made with.

Importing this package imports nothing heavy; torch is imported by the submodules that need it.
"""
