"""MCU: an STM32H743-class Cortex-M7 microcontroller (1 MB SRAM, 2 MB flash; C code)."""

from edgesdk.plugin import GCC, Backend, hookimpl
from edgesdk_plugins import profile_file


@hookimpl
def edgesdk_device_profiles():
    return [profile_file("mcu")]


@hookimpl
def edgesdk_backends():
    # Cortex-M7 with the double-precision FPU of the STM32H7 (fpv5-d16), hard-float ABI; float16
    # (group scales of 4-bit weights) as the IEEE half format, which the FPU converts.
    gcc = GCC(command="arm-none-eabi-gcc", flags=["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16", "-mfp16-format=ieee", "-O2"])
    return [Backend(name="mcu", description="C kernels for Cortex-M7 + an ARM object", emit="c_source", toolchain=gcc)]
