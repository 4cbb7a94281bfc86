"""Processors that embed a text, and fail for the text "boom"."""

from poolkit.io_processor import IOProcessor


class RaisesInPreProcess(IOProcessor):
    task = "embed"

    def pre_process(self, data, params):
        if data == "boom":
            raise RuntimeError("pre_process exploded")
        return data

    def post_process(self, outputs, request):
        return outputs[0].outputs.data


class RaisesInPostProcess(RaisesInPreProcess):
    def pre_process(self, data, params):
        return data

    def post_process(self, outputs, request):
        if request == "boom":
            raise ZeroDivisionError("post_process exploded")
        return outputs[0].outputs.data
