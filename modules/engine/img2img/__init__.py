"""img2img, sketch, inpaint, outpaint and folder batches, on diffusers' img2img and inpaint pipelines.

Files, in the order a job uses them:

- `plan.py`: sampler, steps (A1111 runs int(steps x denoising strength)), noise multiplier, batch size.
- `canvas.py`: init image + mask -> `Canvas` (pixels to encode, the sampler's mask, how to paste back).
- `prepare.py`: the pure PIL/numpy operations behind it (resize modes, mask blur, crop region, fill, overlay).
- `latents.py` and `sample.py`: encoding, masked content in latent space, our seeds' noise, one batch.
- `params.py`: the infotext keys. `run.py`: `run_img2img`. `batch.py`: `run_img2img_batch`.

Behaviour, and where it departs from A1111 (each choice is A1111's unless said otherwise):

- Resize modes: 0 stretch, 1 cover and centre-crop, 2 fit and fill the border with stretched edge pixels,
  3 encode at the image's own size (rounded to 8) and upscale the latents to width x height.
- Seeds: the noise is ours (`seeds.initial_noise`, variation seeds included), fed to the pipeline through
  its scheduler's `add_noise` (see `latents.noise_from`), and init images are encoded with the VAE's mean,
  so the same seed and inputs give the same image.
- Denoising strength 0 samples nothing: the result is the init latents decoded (A1111 takes one step at the
  lowest noise, which comes to the same). Any strength above 0 takes at least one step.
- Masks: white is repainted; mask_round thresholds at half grey; invert; Gaussian blur with A1111's
  mask_blur_x/y kernel. diffusers binarises the sampler's mask at half grey whatever mask_round says, so a
  soft mask (mask_round off) is soft only in the paste-back.
- A mask of another size than its image is stretched onto the image, with a note (A1111 stretches it when
  it builds the overlay, so its crop and overlay could disagree; here they cannot).
- An empty mask (nothing painted, after invert) is refused: "the mask is empty: paint the area to change".
  A1111 silently turns "Only masked" into plain img2img and makes "Whole picture" a no-op.
- "Only masked" (inpaint_full_res): the mask's box plus padding, grown to width:height, is generated at
  width x height and pasted back; the result has the init image's size, as in A1111.
- The original pixels go back outside the mask (A1111's overlay): with mask blur 0 they are unchanged.
- Masked content: fill (the area takes the blurred surrounding colours), original, latent noise (the seed's
  noise), latent nothing (zeros); initial_noise_multiplier scales the noise (infotext "Noise multiplier").
- Outpainting: resize mode 2 with a mask repaints the border the fill invents, besides what the mask
  paints (an all-black mask then outpaints only); the canvas and result are width x height whatever the
  inpaint area. Without a mask, mode 2 stays plain img2img over the whole filled image, as in A1111, so
  API clients that use it for restyling get what they got there.
- Resize mode 3 with a mask resizes in pixels like mode 0 (A1111 has no working path for it).
- 9-channel inpainting checkpoints without a mask run the inpaint pipeline with an all-white mask, as
  A1111 conditions them; 4-channel checkpoints inpaint through diffusers' latent blending.
- Several init images: each batch holds each of them once (batch size = their number, with a note).
- include_init_images makes the API append the init images to its answer; the engine has nothing to do for it.
- ControlNet: `run.control_for` prepares the units (a unit without an image uses the init image as prepared for
  sampling) and `sample.sample_batch` picks the ControlNet variant of the pipeline.
- Restore faces runs on each decoded image before the paste-back, so faces outside the mask stay as they were.
"""

from modules.engine.img2img.batch import run_img2img_batch
from modules.engine.img2img.run import run_img2img

__all__ = ["run_img2img", "run_img2img_batch"]
