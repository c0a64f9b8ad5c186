"""Unit conversion for the `unit_convert` tool: length, mass, time, volume, speed, data size, temperature.

Each linear unit is a factor to its dimension's base unit (metre, kilogram, second,
litre, metre per second, byte). Temperature has offsets, so it is converted through
kelvin instead. Names are matched case-insensitively; "b" means byte, "bit" a bit.
"""

from __future__ import annotations

_LINEAR: dict[str, dict[str, tuple[float, tuple[str, ...]]]] = {
    # dimension: {canonical unit: (factor to base, aliases)}
    "length": {
        "nm": (1e-9, ("nanometer", "nanometre", "nanometers", "nanometres")),
        "um": (1e-6, ("µm", "micrometer", "micrometre", "micrometers", "micrometres", "micron")),
        "mm": (1e-3, ("millimeter", "millimetre", "millimeters", "millimetres")),
        "cm": (1e-2, ("centimeter", "centimetre", "centimeters", "centimetres")),
        "m": (1.0, ("meter", "metre", "meters", "metres")),
        "km": (1e3, ("kilometer", "kilometre", "kilometers", "kilometres")),
        "in": (0.0254, ("inch", "inches")),
        "ft": (0.3048, ("foot", "feet")),
        "yd": (0.9144, ("yard", "yards")),
        "mi": (1609.344, ("mile", "miles")),
        "nmi": (1852.0, ("nautical mile", "nautical miles")),
    },
    "mass": {
        "mg": (1e-6, ("milligram", "milligrams")),
        "g": (1e-3, ("gram", "grams")),
        "kg": (1.0, ("kilogram", "kilograms", "kilo", "kilos")),
        "t": (1e3, ("tonne", "tonnes", "metric ton", "metric tons")),
        "oz": (0.028349523125, ("ounce", "ounces")),
        "lb": (0.45359237, ("lbs", "pound", "pounds")),
        "st": (6.35029318, ("stone", "stones")),
    },
    "time": {
        "ns": (1e-9, ("nanosecond", "nanoseconds")),
        "us": (1e-6, ("µs", "microsecond", "microseconds")),
        "ms": (1e-3, ("millisecond", "milliseconds")),
        "s": (1.0, ("sec", "secs", "second", "seconds")),
        "min": (60.0, ("mins", "minute", "minutes")),
        "h": (3600.0, ("hr", "hrs", "hour", "hours")),
        "day": (86400.0, ("d", "days")),
        "week": (604800.0, ("wk", "weeks")),
        "year": (31557600.0, ("yr", "yrs", "years")),  # Julian year, 365.25 days
    },
    "volume": {
        "ml": (1e-3, ("milliliter", "millilitre", "milliliters", "millilitres")),
        "l": (1.0, ("liter", "litre", "liters", "litres")),
        "m3": (1e3, ("m^3", "cubic meter", "cubic metre", "cubic meters", "cubic metres")),
        "floz": (0.0295735295625, ("fl oz", "fluid ounce", "fluid ounces")),
        "cup": (0.2365882365, ("cups",)),
        "pt": (0.473176473, ("pint", "pints")),
        "qt": (0.946352946, ("quart", "quarts")),
        "gal": (3.785411784, ("gallon", "gallons")),  # US
    },
    "speed": {
        "m/s": (1.0, ("mps", "meters per second", "metres per second")),
        "km/h": (1 / 3.6, ("kmh", "kph", "kilometers per hour", "kilometres per hour")),
        "mph": (0.44704, ("mi/h", "miles per hour")),
        "kn": (1852 / 3600, ("knot", "knots", "kt")),
    },
    "data size": {
        "bit": (0.125, ("bits",)),
        "B": (1.0, ("byte", "bytes")),
        "kB": (1e3, ("kilobyte", "kilobytes")),
        "MB": (1e6, ("megabyte", "megabytes")),
        "GB": (1e9, ("gigabyte", "gigabytes")),
        "TB": (1e12, ("terabyte", "terabytes")),
        "KiB": (1024.0, ("kibibyte", "kibibytes")),
        "MiB": (1024.0**2, ("mebibyte", "mebibytes")),
        "GiB": (1024.0**3, ("gibibyte", "gibibytes")),
        "TiB": (1024.0**4, ("tebibyte", "tebibytes")),
    },
}

_TEMPERATURE: dict[str, tuple[str, ...]] = {
    "C": ("°c", "celsius", "degc", "degree celsius", "degrees celsius", "centigrade"),
    "F": ("°f", "fahrenheit", "degf", "degree fahrenheit", "degrees fahrenheit"),
    "K": ("kelvin", "kelvins"),
}


class UnitError(ValueError):
    """An unknown unit, or two units of different kinds."""


def _build_index() -> dict[str, tuple[str, str]]:
    index: dict[str, tuple[str, str]] = {}
    for dimension, units in _LINEAR.items():
        for unit, (_, aliases) in units.items():
            for name in (unit, *aliases):
                index[name.lower()] = (dimension, unit)
    for unit, aliases in _TEMPERATURE.items():
        for name in (unit, *aliases):
            index[name.lower()] = ("temperature", unit)
    return index


_INDEX = _build_index()


def lookup(unit: str) -> tuple[str, str]:
    """(dimension, canonical unit) for a unit name or alias."""
    found = _INDEX.get(" ".join(unit.strip().lower().split()))
    if found is None:
        known = ", ".join(f"{dimension}: {' '.join(units)}" for dimension, units in known_units().items())
        raise UnitError(f"unknown unit {unit!r}; known units are {known}")
    return found


def known_units() -> dict[str, list[str]]:
    """Canonical unit names by dimension."""
    return {**{dimension: list(units) for dimension, units in _LINEAR.items()}, "temperature": list(_TEMPERATURE)}


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """`value` in `from_unit`, expressed in `to_unit`."""
    from_dimension, source = lookup(from_unit)
    to_dimension, target = lookup(to_unit)
    if from_dimension != to_dimension:
        raise UnitError(f"cannot convert {from_unit} ({from_dimension}) to {to_unit} ({to_dimension})")
    if from_dimension == "temperature":
        result = _from_kelvin(_to_kelvin(value, source), target)
    else:
        units = _LINEAR[from_dimension]
        result = value * units[source][0] / units[target][0]
    return float(f"{result:.12g}")  # hide float noise such as 0.30000000000000004


def _to_kelvin(value: float, unit: str) -> float:
    return {"K": value, "C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15}[unit]


def _from_kelvin(kelvin: float, unit: str) -> float:
    return {"K": kelvin, "C": kelvin - 273.15, "F": (kelvin - 273.15) * 9 / 5 + 32}[unit]
