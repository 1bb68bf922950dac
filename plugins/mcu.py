"""MCU: an STM32H743-class Cortex-M7 microcontroller (1 MB SRAM, 2 MB flash; C code)."""

from edgesdk import hookimpl
from edgesdk_plugins import profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("mcu")]
