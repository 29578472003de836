"""The toolkit for plugins: every name a plugin author imports from promptgen, in one documented place.

``from promptgen.toolkit import Epochs, FeatureSet, train_epochs`` works whatever module a name lives
in today: internals can move without breaking a plugin (docs/plugins.md lists them). Names are
looked up on first use, so importing this module loads neither torch nor any other heavy module.
``hookimpl`` and ``lazy``, which a plugin's registration module needs, are also at ``promptgen``.
"""

from __future__ import annotations

import importlib

# module -> the public names it gives plugins
_EXPORTS: dict[str, tuple[str, ...]] = {
    "promptgen.components.hookspecs": ("hookimpl",),
    "promptgen.components.lazy": ("lazy", "load_factory"),
    "promptgen.components.options": ("Option", "option", "searched"),
    "promptgen.components.search": ("LogUniform", "Uniform", "IntLogUniform", "Choice", "draw_trial", "search_space"),
    "promptgen.components.protocols": ("check_fit_report",),
    "promptgen.components.registry": ("default_registry", "create"),
    "promptgen.components.run_values": ("RunValues",),
    "promptgen.errors": ("PromptgenError", "ConfigError", "DatasetError", "BackboneLoadError", "PluginError",
                         "suggestion"),
    "promptgen.validators": ("integer", "number"),
    "promptgen.toolkit.device": ("autocast", "choose_device", "choose_precision"),
    "promptgen.toolkit.classes": ("class_key",),
    "promptgen.toolkit.checkpoints": ("save_prompt_label", "load_prompt_label", "save_generator", "load_generator",
                                      "check_fingerprint", "save_labels_and_generator", "load_labels_and_generator",
                                      "save_training_state", "load_training_state"),
    "promptgen.files": ("atomic_file", "read_json", "write_json"),
    "promptgen.paths": ("cache_root", "writable_dir"),
    "promptgen.machine": ("usable_cores",),
    "promptgen.toolkit.prompt_training": ("train_prompts", "fit_context"),
    "promptgen.toolkit.data": ("stable_int_hash", "extract_features"),
    "promptgen.toolkit.epochs": ("Epochs", "steps_per_epoch"),
    "promptgen.toolkit.evaluate": ("accuracy", "logits", "prompt_logits", "prompt_accuracy", "instance_logits",
                                   "context_logits", "drawn_prompts", "per_draw"),
    "promptgen.toolkit.generator_training": ("Trainer", "fit_generator", "train_epochs", "condition",
                                             "PromptScaler", "LR_SCHEDULES", "loop_arguments", "trains_in_loop",
                                             "builds_stepped", "module_states", "load_module_states"),
    "promptgen.toolkit.methods": ("SharedPromptMethod",),
    "promptgen.toolkit.prompts": ("PromptAssembler", "phrase_embedding", "context_length"),
    "promptgen.toolkit.quality": ("prompt_quality",),
    "promptgen.components.schedule": ("Schedule", "ScheduleOptions", "SGDScheduleOptions", "PromptLearnerOptions",
                                      "GeneratorScheduleOptions",
                                      "GENERATOR_LR", "GENERATOR_WEIGHT_DECAY", "GENERATOR_PRESETS", "PROMPT_LR"),
    "promptgen.toolkit.lr_schedules": ("warmup_cosine", "dassl_lr"),
    "promptgen.toolkit.best_epoch": ("BestEpoch", "report_epoch"),
    "promptgen.values": ("Sample", "FeatureSet", "PromptLabel", "Tokens"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)

# Names the toolkit gave before, and where they are now: a plugin that imports one is told in one line.
_MOVED = {
    "resolve": "renamed load_factory (promptgen.toolkit.load_factory)",
    "loop_settings": "renamed loop_arguments (promptgen.toolkit.loop_arguments)",
    "SCHEDULES": "renamed LR_SCHEDULES (promptgen.toolkit.LR_SCHEDULES)",
    "resolve_device": "renamed choose_device (promptgen.toolkit.choose_device)",
    "resolve_precision": "renamed choose_precision (promptgen.toolkit.choose_precision)",
    "FeatureCache": "no longer in the toolkit, which sits below the cache: import it from promptgen.storage.cache",
    "BackboneConfig": "no longer in the toolkit, which sits below the run engine: import it from promptgen.runs.config",
}


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        if name in _MOVED:
            raise AttributeError(f"promptgen.toolkit.{name}: {_MOVED[name]}")
        raise AttributeError(f"promptgen.toolkit has no {name!r}; plugin-facing names: {', '.join(__all__)}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return __all__
