"""The seed's 18 sampler names as diffusers schedulers (the table in DESIGN.md).

Built with `Cls.from_config(pipe.scheduler.config, **flags)`, so every scheduler keeps the
checkpoint's noise schedule (betas, prediction type) and changes only how it steps.
"DPM++ 2S a" and "DPM fast" have no exact diffusers equivalent; the nearest is used.
"""

from __future__ import annotations

import inspect

# name -> (diffusers class name, flags)
SCHEDULER_MAP: dict[str, tuple[str, dict]] = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2S a": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ 2S a Karras": ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
    "DPM fast": ("DPMSolverSinglestepScheduler", {"solver_order": 3}),
}


def build_scheduler(name: str, base_config, timestep_spacing: str = "trailing"):
    """A fresh scheduler for `name` from the pipeline's scheduler config."""
    import diffusers

    class_name, flags = SCHEDULER_MAP[name]
    cls = getattr(diffusers, class_name)
    accepted = inspect.signature(cls.__init__).parameters
    options = dict(flags)
    if "timestep_spacing" in accepted:
        options["timestep_spacing"] = timestep_spacing
    # SD checkpoints are trained with a final alpha of 1 in the schedule; keep the
    # checkpoint's own betas and prediction type from base_config
    return cls.from_config(base_config, **options)
