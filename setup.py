"""Builds the native module `cistern._cistern` with the project's CMake (a
Release build in build/pip) and places it in the wheel beside the pure-Python
files. Settings live in pyproject.toml.

CISTERN_CMAKE_BUILD_DIR names a build tree already configured for this Python
(make pipcheck passes build/release): the module is built there, and nothing
is configured again."""

import os
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build = os.environ.get("CISTERN_CMAKE_BUILD_DIR")
        if not build:
            build = os.path.join(ROOT, "build", "pip")
            subprocess.check_call([
                "cmake", "-S", ROOT, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                f"-DPython_EXECUTABLE={sys.executable}", f"-DPYTHON_EXECUTABLE={sys.executable}"])
        subprocess.check_call(["cmake", "--build", build, "--target", "_cistern"])
        built = os.path.join(build, "python", "cistern", os.path.basename(self.get_ext_filename(ext.name)))
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        self.copy_file(built, target)


setup(ext_modules=[Extension("cistern._cistern", sources=[])], cmdclass={"build_ext": CMakeBuild})
