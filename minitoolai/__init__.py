"""MiniToolAI: a self-hostable AI API platform with prepaid credit."""

__version__ = "0.1.0"
