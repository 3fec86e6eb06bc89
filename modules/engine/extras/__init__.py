"""Extras: upscaling and face restoration of finished images, as A1111's Extras tab and extra-* API routes do.

    job = services.jobs.submit("extras", ExtrasRequest(images=[image], upscaler_1="Lanczos", upscaling_resize=2))
    job.wait(); job.result.images[0].image, job.result.images[0].path, job.result.html_info

Importing this package imports neither torch nor PIL.

Modules:
    requests: `ExtrasRequest` (A1111's field names; images or a server folder).
    run: `run_extras`, the job: order of operations, skipping, progress, saving.
    steps: the upscale (scale by / scale to / crop, Upscaler 2 blend) and face restoration steps.
    infotext: A1111's postprocessing infotext, and how it joins the source image's parameters.
    folder: listing a server folder and saving into an output folder under the source's name.
    results: `ExtrasResult` and `ExtrasImage`.
"""

from modules.engine.extras.requests import CODEFORMER, GFPGAN, NOTHING_TO_DO, ExtrasOptions, ExtrasRequest
from modules.engine.extras.results import ExtrasImage, ExtrasResult

__all__ = ["CODEFORMER", "GFPGAN", "NOTHING_TO_DO", "ExtrasImage", "ExtrasOptions", "ExtrasRequest", "ExtrasResult"]
