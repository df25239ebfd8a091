"""Readers for other apps' exports: Fitbit CSVs, Welltory CSVs and Apple Health's export.xml.

Each reader yields `pulse_core.usecases.DayRecord`s (one per day, with only the fields that day
has) for `pulse_core.usecases.import_days` to validate and merge. Readers import only the standard
library and pulse_core, and the CLI imports them lazily, so this package stays light.

    from pulse_core.importers.fitbit import read_fitbit
    from pulse_core.importers.welltory import read_welltory
    from pulse_core.importers.apple_health import read_apple_health
"""
