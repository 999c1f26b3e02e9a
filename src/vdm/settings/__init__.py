"""Declared settings: every setting is one declaration, the rest is read from it.

A setting is declared once, on the field of its section's dataclass
(:func:`vdm.settings.spec.setting`: kind, default, help, environment variable,
secret or not).  From those declarations :mod:`vdm.settings_table` lists every
setting; TOML and environment loading (:mod:`vdm.settings.load`), the check of
unknown TOML keys, ``vdm config show`` and the generated
``docs/configuration.md`` (:mod:`vdm.settings_docs`) all read that list.

:mod:`vdm.config` assembles the sections into :class:`vdm.config.Settings`.
"""
