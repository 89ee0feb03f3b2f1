"""Collecting the checks loads this conftest: it brings the plugin's fixtures (and, when the
package is given by path, its options). See plugin.py for `-p dnscache_agent.checks.plugin`."""

from __future__ import annotations

from .plugin import dnscache_agent, dnscache_options, pytest_addoption, verify_report

__all__ = ["dnscache_agent", "dnscache_options", "pytest_addoption", "verify_report"]
