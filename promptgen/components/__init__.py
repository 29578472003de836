"""The plugin framework: component kinds and their protocols, hook specifications, the registry, options and presets.

What a component is (a factory registered under a name by a plugin), what it must provide
(:mod:`.protocols`), which options it takes (:mod:`.options`) with which values per preset
(:mod:`.presets`), and the one resolver that turns a run's settings into the options a component
receives (:mod:`.resolve`).
"""
