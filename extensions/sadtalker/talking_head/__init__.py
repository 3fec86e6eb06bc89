"""SadTalker "digital human" core: our own PyTorch re-implementation of the OpenTalker/SadTalker inference networks.

The classes in `nets/` reproduce the upstream network layouts (commit cd4c046) key for key, so the OFFICIAL
released checkpoints (`SadTalker_V0.0.2_{256,512}.safetensors`, `mapping_00229/00109-model.pth.tar`) load into them
unchanged with strict loading. `weights.py` splits and loads those files and builds the deterministic synthetic
weights that the golden test vectors were made with.

The stages around the networks, in pipeline order:
- `crop.py`           face crop modes (crop, extcrop, resize, full, extfull) around a pluggable `FaceLandmarker`;
- `align.py`          alignment of the face crop for the 3DMM regressor (5 points, scale/shift fit, 224 crop);
- `source_coeffs.py`  the source frame(s) -> 73-column 3DMM coefficient rows;
- `audio.py`          decoding, mel spectrogram and per-frame mel windows, with user-facing input checks;
- `coeffs.py`         blinks, ExpNet, PoseVAE, smoothing, reference videos -> per-frame coefficient rows;
- `render_windows.py`, `camera_angles.py`, `render_chain.py`  coefficient windows, explicit head angles and
  MappingNet -> keypoints -> generator -> frames.

Importing this package imports nothing heavy; torch is imported by the submodules that need it.
"""
