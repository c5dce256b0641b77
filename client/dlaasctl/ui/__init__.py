"""The web dashboard (`dlaasctl ui`): aiohttp, imported only by that command."""
