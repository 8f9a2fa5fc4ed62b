"""colcon (ament_python) build of the ``engram`` ROS 2 package.

The node code lives in the Engram Python package (``engram.runtime.bridges.ros2``), installed with
pip; this package adds the ROS 2 side: the ament index marker, package.xml, launch
files, parameter files and the ``bridge`` executable (``ros2 run engram bridge``).
The Python distribution is called ``engram_ros`` so that its metadata does not
shadow the pip-installed ``engram`` distribution.
"""

from glob import glob

from setuptools import setup

PACKAGE = "engram"

setup(
    name="engram_ros",
    version="0.1.0",
    packages=[],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.*"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Engram developers",
    maintainer_email="engram@users.noreply.github.com",
    description="ROS 2 bridge and launch files for the Engram runtime",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "bridge = engram.runtime.bridges.ros2.nodes:main",
        ],
    },
)
