from setuptools import find_namespace_packages, find_packages, setup

# Import name -> folder. Subpackages are discovered, so a new folder with an __init__.py
# under any of these is packaged without editing this file.
ROOTS = {"neurowire": "neurowire", "neurowire.codec": "codec_c",
         "neurowire.daemon": "daemon", "neurowire.clients": "clients"}
# Folders of data, not code (web assets, the C sources an sdist compiles): setuptools
# wants them listed as packages too, or warns that it will stop installing their files.
DATA_FOLDERS = ["src", "static", "static.*", "*.static", "*.static.*"]
PACKAGES = [f"{root}.{sub}" if sub else root
            for root, folder in ROOTS.items()
            for sub in [""] + find_packages(folder)
            + find_namespace_packages(folder, include=DATA_FOLDERS)]

setup(package_dir=ROOTS, packages=PACKAGES, cffi_modules=["codec_c/build_ffi.py:ffibuilder",
                    "daemon/build_fastpath.py:ffibuilder",
                    "clients/build_sub_loop.py:ffibuilder",
                    "clients/build_sim_loop.py:ffibuilder"])
