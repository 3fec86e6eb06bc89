"""The core settings sections. Extensions add theirs through `api.add_settings`. Keys follow A1111's
`config.json` names where A1111 has the option, so an A1111 config.json keeps its meaning here."""

from __future__ import annotations

from modules.settings.options import Option, Section


def core_sections() -> list[Section]:
    return [
        Section("saving", "Saving images", (
            Option("samples_format", "png", "File format for images", "choice", choices=("png", "jpg", "webp"),
                   help="PNG keeps the generation parameters in a text chunk; JPEG and WebP keep them in EXIF."),
            Option("jpeg_quality", 80, "Quality for saved JPEG and WebP images", "int", minimum=1, maximum=100),
            Option("enable_pnginfo", True, "Save generation parameters inside the image", "bool"),
            Option("save_txt", False, "Also write the parameters to a .txt file beside each image", "bool"),
            Option("save_to_dirs", True, "Save images to a subfolder per day", "bool"),
            Option("directories_filename_pattern", "[date]", "Subfolder name pattern", "str"),
            Option("samples_filename_pattern", "", "File name pattern (empty: [seed])", "str"),
            Option("save_images_add_number", True, "Prefix file names with a counter (00012-…)", "bool"),
            Option("grid_save", True, "Save a grid for multi-image jobs", "bool"),
        )),
        Section("sd", "Stable Diffusion", (
            Option("sd_model_checkpoint", "", "Checkpoint to use when a request names none (empty: the first one)",
                   "str"),
            Option("sd_vae", "Automatic", "VAE: Automatic, None, or a file in models/VAE", "str",
                   help="Automatic uses <checkpoint>.vae.safetensors beside the checkpoint when there is one."),
            Option("show_progress_every_n_steps", 5, "Live preview every N sampling steps", "int", minimum=1,
                   maximum=100),
            Option("max_image_pixels", 4096 * 4096, "Largest image (width x height) a request may ask for",
                   "int", minimum=64 * 64, maximum=16384 * 16384),
            # A request's size is bounded per image, but batch count x batch size x steps is not: 1000 x 64 x 500
            # steps is days of GPU time. Off by default (A1111 has no such limit); a shared server sets one.
            Option("max_job_steps", 0, "Most sampling steps one request may run in all (steps x images, hires "
                   "pass included; 0 = no limit)", "int", minimum=0, maximum=10**9),
        )),
        Section("optimizations", "Optimizations", (
            Option("vae_tiling", "auto", "VAE tiling", "choice", choices=("auto", "on", "off"),
                   help="auto tiles large images only; 'on' helps when a job runs out of memory at the very end."),
            Option("vae_slicing", True, "VAE slicing (decode a batch one image at a time)", "bool"),
            Option("attention_slicing", False, "Attention slicing (less VRAM, slower)", "bool"),
            Option("channels_last", False, "channels_last memory format for the UNet", "bool"),
            Option("tf32", True, "Allow TF32 matmuls on NVIDIA GPUs", "bool"),
            Option("torch_compile", False, "torch.compile the UNet (slow first image, faster after)", "bool",
                   help="Applied when a checkpoint is loaded."),
        )),
        Section("upscaling", "Upscaling", (
            Option("upscaler_tile_size", 192, "Tile size for model upscalers (0 = no tiling)", "int", minimum=0,
                   maximum=4096, help="Smaller tiles need less VRAM; overlaps are blended so no seams show."),
            Option("upscaler_tile_overlap", 8, "Tile overlap for model upscalers (pixels)", "int", minimum=0,
                   maximum=512),
        )),
        Section("face-restoration", "Face restoration", (
            Option("face_restoration_model", "GFPGAN", "Face restoration model", "choice",
                   choices=("GFPGAN", "RestoreFormer", "CodeFormer"),
                   help="Weights go in models/GFPGAN. CodeFormer is offered only when spandrel-extra-arches is "
                   "installed (its licence is non-commercial)."),
            Option("code_former_weight", 0.5, "CodeFormer weight (0 = strongest effect, 1 = weakest)", "float",
                   minimum=0.0, maximum=1.0, step=0.01),
            Option("face_restoration_unload", False, "Move face restoration models from VRAM to RAM after use",
                   "bool"),
        )),
        Section("system", "System", (
            Option("extension_hook_timeout", 30, "Seconds an extension hook may run before it is marked failed",
                   "int", minimum=1, maximum=3600),
            Option("api_max_request_mb", 50, "Largest REST request body (MB); bigger ones are refused unread",
                   "int", minimum=1, maximum=4096),
            Option("api_enable_requests", False, "Let API clients send http(s) URLs for input images",
                   "bool", help="The server fetches them itself; addresses on this machine or the private network "
                   "are always refused."),
            Option("job_retention_minutes", 60, "Minutes a finished job's result stays retrievable", "int",
                   minimum=1, maximum=7 * 24 * 60),
        )),
        Section("extensions", "Extensions", (
            Option("disabled_extensions", [], "Disabled extensions", "list", hidden=True, restart=True),
        )),
    ]
