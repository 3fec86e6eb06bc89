"""The mask a restored face is pasted back through, and the paste itself.

GFPGAN (facexlib's `FaceRestoreHelper` with `use_parse=True`, which A1111 uses) does not paste the whole 512x512
square back: ParseNet labels every pixel of the restored face with one of 19 face-part classes, the face parts
become 1 and the rest (background, and labels 14, 16, 17, 18) 0, the mask is blurred twice with a 101-pixel
Gaussian (sigma 11) so the seam fades over some 30 pixels, a 10-pixel frame is cleared so no edge of the square
shows, and the mask is warped back with the face. Hair and background around the face stay the original's.

Without the parser's weights we do what the same helper does with `use_parse=False`, rather than refuse: the
square is warped back, eroded by a margin that grows with the face (a twentieth of its side, twice), and its edge
blurred by that margin. Seams show a little more on busy backgrounds; the result carries a note saying so and how
to get the parser. Refusing would make face restoration unusable for want of an optional 83 MB file.

Only the face's bounding rectangle in the image is touched: pixels outside it are returned as they were.

Importing this module imports neither torch, numpy, cv2 nor facexlib; the functions do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from modules.engine.postprocess.faces.detect import FACE_SIZE, fit, load_state_dict

if TYPE_CHECKING:
    import numpy as np
    import torch

# Labels facexlib's helper leaves out of the paste mask (background, and the parts around the face).
NOT_FACE_LABELS = (0, 14, 16, 17, 18)
PARSE_CLASSES = 19
# GFPGAN's mask softening in the 512x512 face: two Gaussian blurs, then a cleared frame.
MASK_BLUR_KERNEL = 101
MASK_BLUR_SIGMA = 11
MASK_FRAME = 10


class FaceParser(Protocol):
    """Labels each pixel of a (512, 512, 3) uint8 RGB face with a face-part class (ParseNet's 19 classes)."""

    def labels(self, face_rgb: np.ndarray) -> np.ndarray: ...


class ParseNetParser:
    """facexlib's ParseNet with weights from a local `parsing_parsenet.pth`, on `device`, in float32.

    Raises:
        UserError: The file is unreadable or does not fit the network.
    """

    def __init__(self, path: Path, device: torch.device) -> None:
        from facexlib.parsing.parsenet import ParseNet

        self.path = path
        net = ParseNet(in_size=FACE_SIZE, out_size=FACE_SIZE, parsing_ch=PARSE_CLASSES)
        fit(net, load_state_dict(path, "face parser"), path, "face parser (ParseNet)")
        self.net = net.eval()
        self.device = device
        self.net.to(device)

    def to(self, device: torch.device) -> None:
        """Move the network (for `face_restoration_unload`)."""
        self.net.to(device)
        self.device = device

    def labels(self, face_rgb: np.ndarray) -> np.ndarray:
        import numpy as np
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(face_rgb.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)
        with torch.inference_mode():
            out = self.net(tensor.unsqueeze(0).to(self.device))[0]  # ParseNet returns (parsing logits, image)
            return out.argmax(dim=1)[0].cpu().numpy()


def parsing_mask(labels: np.ndarray) -> np.ndarray:
    """A (512, 512) float32 mask in 0..1 from ParseNet labels, softened as GFPGAN softens it."""
    import cv2
    import numpy as np

    mask = np.where(np.isin(labels, NOT_FACE_LABELS), 0.0, 1.0).astype(np.float32)
    kernel = (MASK_BLUR_KERNEL, MASK_BLUR_KERNEL)
    mask = cv2.GaussianBlur(cv2.GaussianBlur(mask, kernel, MASK_BLUR_SIGMA), kernel, MASK_BLUR_SIGMA)
    mask[:MASK_FRAME, :] = 0
    mask[-MASK_FRAME:, :] = 0
    mask[:, :MASK_FRAME] = 0
    mask[:, -MASK_FRAME:] = 0
    return mask


def paste_face(target: np.ndarray, face: np.ndarray, affine: np.ndarray, mask: np.ndarray | None) -> bool:
    """Blend `face` (the restored 512x512 crop) back into `target` (H, W, 3 uint8, changed in place).

    Args:
        affine: The (2, 3) image-to-crop matrix `align_face` returned.
        mask: The crop's (512, 512) paste mask (`parsing_mask`), or None for the eroded square fallback.

    Returns:
        False when the face lies wholly outside the image (nothing changed).
    """
    import cv2
    import numpy as np

    height, width = target.shape[:2]
    inverse = cv2.invertAffineTransform(affine)
    corners = np.array([[0, 0, 1], [FACE_SIZE, 0, 1], [0, FACE_SIZE, 1], [FACE_SIZE, FACE_SIZE, 1]], np.float64)
    mapped = corners @ inverse.T
    # The warped square's bounding rectangle plus a pixel or two of interpolation, clipped to the image: the
    # paste works on this window only, so its cost follows the face's size, not the image's.
    x0 = max(0, math.floor(mapped[:, 0].min()) - 2)
    y0 = max(0, math.floor(mapped[:, 1].min()) - 2)
    x1 = min(width, math.ceil(mapped[:, 0].max()) + 2)
    y1 = min(height, math.ceil(mapped[:, 1].max()) + 2)
    if x1 <= x0 or y1 <= y0:
        return False
    window = inverse.copy()
    window[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    restored = cv2.warpAffine(face, window, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    if mask is not None:
        # facexlib warps the mask with flag 3; any smooth interpolation of a mask this blurred is the same.
        soft = cv2.warpAffine(mask.astype(np.float32), window, size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        soft = _square_mask(window, size)
    soft = np.clip(soft, 0.0, 1.0)[:, :, None]
    original = target[y0:y1, x0:x1].astype(np.float32)
    blended = soft * restored.astype(np.float32) + (1.0 - soft) * original
    target[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return True


def _square_mask(window: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """facexlib's `use_parse=False` mask: the warped square, eroded by 2 pixels to drop its interpolated rim,
    eroded again by a tenth of the face's side and blurred over a twentieth, so the edge fades inside the square."""
    import cv2
    import numpy as np

    square = np.ones((FACE_SIZE, FACE_SIZE), dtype=np.float32)
    warped = cv2.warpAffine(square, window, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    warped = cv2.erode(warped, np.ones((2, 2), np.uint8))
    edge = int(math.sqrt(float(warped.sum()))) // 20
    if edge < 1:
        return warped  # a face a few pixels wide: no room for a soft edge
    centre = cv2.erode(warped, np.ones((2 * edge, 2 * edge), np.uint8))
    return cv2.GaussianBlur(centre, (2 * edge + 1, 2 * edge + 1), 0)

