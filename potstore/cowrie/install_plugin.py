"""Copies the HoneyBee output plugin into this environment's Cowrie output package.

Usage: install_plugin.py PLUGIN_FILE (run with the pot's virtualenv Python).
"""
import shutil
import sys

import cowrie.output

target_dir = list(cowrie.output.__path__)[0]
shutil.copyfile(sys.argv[1], target_dir + "/honeybee.py")
print("installed the HoneyBee output plugin into " + target_dir)
