# Installed by the lamin_magic wheel into <prefix>/etc/ipython/startup/, so that every Jupyter
# kernel of this environment tracks its notebook. Terminal IPython is left alone.
# Switch it off with LAMIN_MAGIC_AUTOLOAD=0.


def _lamin_magic_autoload() -> None:
    import os

    if os.environ.get("LAMIN_MAGIC_AUTOLOAD", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    try:
        ip = get_ipython()  # type: ignore[name-defined]  # noqa: F821
        if type(ip).__name__ != "ZMQInteractiveShell":
            return
        # what a kernel prints while it starts is shown in no cell: the extension says what
        # it tracks in the output of the first cell instead. It loads just before that cell,
        # so that starting a kernel costs next to nothing (and a kernel that runs no cell
        # records nothing).
        ip._lamin_magic_autoload = True

        def load_lamin_magic(info: object) -> None:
            ip.events.unregister("pre_run_cell", load_lamin_magic)
            try:
                from lamin_magic.extension import load_before_first_cell

                load_before_first_cell(ip, info)
            except Exception as e:  # never break a kernel
                import warnings

                warnings.warn(f"lamin_magic did not load: {e}", stacklevel=1)

        ip.events.register("pre_run_cell", load_lamin_magic)
    except Exception as e:  # never break a kernel
        import warnings

        warnings.warn(f"lamin_magic did not load: {e}", stacklevel=1)


_lamin_magic_autoload()
del _lamin_magic_autoload
