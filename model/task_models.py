"""The ranking task models a Trainer can build, and which one a model preset names."""


def task_classes() -> tuple:
    """CameNN's task model and the baselines' (camenn.model.baselines), each with its backbone's presets."""
    from camenn.model.baselines import DNNRanker, MMoE
    from camenn.model.camenn import CameNNMultiTask

    return CameNNMultiTask, DNNRanker, MMoE


def task_class(preset: str):
    """The task model class whose family names `preset` (e.g. `camenn_small`, `mmoe_mini`)."""
    for cls in task_classes():
        if preset in cls.backbone_cls.preset_configs:
            return cls
    raise ValueError(f"unknown model preset {preset!r}")
