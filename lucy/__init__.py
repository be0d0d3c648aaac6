"""Lucy: a self-hosted Slack agent that acts in your connected apps.

Importing this package must stay cheap and offline: no SDK is imported here.
"""

__version__ = "0.1.0"
