"""bench/run: Moorage against the daemon behind it, side by side (the usage is in cli.py).

Modules, lower ones first: common, stack, client, the sections (requests_sections,
stream_sections: mixins of Bench), bench, then cli.
"""
