"""CVAT for images 1.1 XML: a file written as CVAT writes it imports with no flags (every shape counted or
reported), export → import → export gives the same bytes, and bad input is refused or rejected per item."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import shapely

import gigavision as gv
from gigavision.errors import InvalidInput
from gigavision.formats import ExportOptions, export_workspace, import_annotations
from tests.test_formats import annotate, tree

# The docs' own mask example (docs.cvat.ai "XML annotation format"): 13 x 15 pixels, runs of 0 and 1, row by row.
DOCS_RLE = "3, 5, 7, 7, 5, 9, 3, 11, 2, 11, 2, 12, 1, 12, 1, 26, 1, 12, 1, 12, 2, 11, 3, 9, 5, 7, 7, 5, 3"

LABELS = """\
      <labels>
        <label>
          <name>car</name>
          <color>#fa3253</color>
          <type>rectangle</type>
          <attributes>
            <attribute>
              <name>color</name>
              <mutable>False</mutable>
              <input_type>select</input_type>
              <default_value>red</default_value>
              <values>red
blue</values>
            </attribute>
            <attribute>
              <name>parked</name>
              <mutable>False</mutable>
              <input_type>checkbox</input_type>
              <default_value>false</default_value>
              <values>false</values>
            </attribute>
            <attribute>
              <name>plate</name>
              <mutable>True</mutable>
              <input_type>text</input_type>
              <default_value></default_value>
              <values></values>
            </attribute>
          </attributes>
        </label>
        <label>
          <name>sign</name>
          <color>#33ddff</color>
          <type>any</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>road</name>
          <color>#b83df5</color>
          <type>polygon</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>lane</name>
          <color>#ff6a4d</color>
          <type>polyline</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>eye</name>
          <color>#34d1b7</color>
          <type>points</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>portrait</name>
          <color>#ddff33</color>
          <type>tag</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>face</name>
          <color>#fafa37</color>
          <type>mask</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>wheel</name>
          <color>#8c78f0</color>
          <type>ellipse</type>
          <attributes>
          </attributes>
        </label>
      </labels>"""


def cvat_xml(images: str, labels: str = LABELS) -> str:
    """An annotations.xml laid out as CVAT's "CVAT for images 1.1" export writes it (task meta, then images)."""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>street</name>
      <size>2</size>
      <mode>annotation</mode>
      <overlap>0</overlap>
      <bugtracker></bugtracker>
      <created>2024-03-01 10:00:00.000000+00:00</created>
      <updated>2024-03-01 11:00:00.000000+00:00</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>1</stop_frame>
      <frame_filter></frame_filter>
      <segments>
        <segment>
          <id>9</id>
          <start>0</start>
          <stop>1</stop>
          <url>http://localhost:8080/api/jobs/9</url>
        </segment>
      </segments>
      <owner>
        <username>ana</username>
        <email>ana@example.org</email>
      </owner>
      <assignee></assignee>
{labels}
    </task>
    <dumped>2024-03-01 11:05:00.000000+00:00</dumped>
  </meta>
{images}
</annotations>
"""


ASTRONAUT = f"""\
  <image id="0" name="astronaut.jpg" width="512" height="512">
    <box label="car" source="manual" occluded="1" xtl="10.50" ytl="20.25" xbr="110.00" ybr="90.75" z_order="2">
      <attribute name="color">blue</attribute>
      <attribute name="parked">true</attribute>
      <attribute name="plate">AB 123</attribute>
    </box>
    <box label="sign" source="manual" occluded="0" xtl="200.00" ytl="200.00" xbr="240.00" ybr="220.00" \
rotation="90.00" z_order="0">
    </box>
    <polygon label="road" source="manual" occluded="0" \
points="300.00,300.00;400.00,310.00;380.00,420.00;310.00,400.00" z_order="1">
    </polygon>
    <polyline label="road" source="manual" occluded="0" points="10.00,300.00;60.00,300.00;60.00,350.00;10.00,300.00" \
z_order="0">
    </polyline>
    <polyline label="lane" source="manual" occluded="0" points="0.00,500.00;511.00,480.00" z_order="0">
    </polyline>
    <points label="eye" source="manual" occluded="0" points="220.50,180.00;260.00,182.00" z_order="0">
    </points>
    <mask label="face" source="auto" occluded="0" rle="{DOCS_RLE}" left="150" top="80" width="13" height="15" \
z_order="0">
    </mask>
    <ellipse label="wheel" source="manual" occluded="0" cx="100.00" cy="400.00" rx="20.00" ry="15.00" z_order="0">
    </ellipse>
    <tag label="portrait" source="manual">
    </tag>
  </image>"""

COINS = """\
  <image id="1" name="coins.png" subset="Train" width="384" height="303">
    <box label="car" source="manual" occluded="0" xtl="5.00" ytl="6.00" xbr="25.00" ybr="36.00" z_order="0">
      <attribute name="color">red</attribute>
      <attribute name="parked">false</attribute>
      <attribute name="plate"></attribute>
    </box>
  </image>"""


def cvat_task(root: Path, samples: dict[str, Path], images: str, labels: str = LABELS) -> Path:
    """CVAT's export layout: annotations.xml beside images/ holding the task's pictures (a project export
    puts those of a subset in images/<subset>/)."""
    for name, folder in (("astronaut.jpg", "images"), ("coins.png", "images/Train")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_bytes(samples[name].read_bytes())
    (root / "annotations.xml").write_text(cvat_xml(images, labels), encoding="utf-8")
    return root


def image_id(ws: gv.Workspace, name: str) -> str:
    (found,) = [i.id for i in ws.list_images(0, 50)[0] if i.name == name]
    return str(found)


def cvat_window(rle: str, width: int, height: int) -> np.ndarray:
    """CVAT's own decoding (dataset_manager's CVATRleToCOCORle, pixel by pixel): runs alternate 0 and 1."""
    out = np.zeros(width * height, dtype=bool)
    offset, value = 0, False
    for run in (int(v) for v in rle.split(",")):
        out[offset : offset + run] = value
        offset, value = offset + run, not value
    return out.reshape(height, width)


def test_cvat_export_imports_with_no_flags(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    ws = sqlite_workspace
    root = cvat_task(tmp_path / "task", samples, ASTRONAUT + "\n" + COINS)
    report = import_annotations(ws, "cvat", root)

    assert (report.files, report.images_ingested, report.annotations) == (1, 2, 9)
    assert dict(report.by_kind) == {"box": 2, "polygon": 3, "point": 2, "mask": 1, "tag": 1}
    (rejected,) = report.rejected  # the open polyline: gigavision has no line kind
    assert rejected.item == "image astronaut.jpg <polyline> #1" and "open polyline (2 points)" in rejected.reason
    assert "annotations.xml: 1 <ellipse>(s) not imported: gigavision has no ellipse kind" in report.notes
    assert "annotations.xml: 1 rotated <box>(es) imported as polygons (their four rotated corners)" in report.notes
    assert "annotations.xml: 1 closed <polyline>(s) (first point = last) imported as polygons" in report.notes

    assert any("not added to the schema: lane" in note for note in report.notes)
    schema = ws.labels.by_name()
    assert {n: c.kind for n, c in schema.items()} == {  # no ellipse class; the lane polyline had no shape left
        "car": "box",
        "sign": "polygon",
        "road": "polygon",
        "eye": "point",
        "portrait": "tag",
        "face": "mask",
    }
    assert schema["car"].color == "#fa3253"
    assert schema["car"].attributes["color"] == ["red", "blue"]
    assert schema["car"].attributes["parked"] == ["false", "true"] and schema["car"].attributes["plate"] == []

    astro = ws.annotations.query(image_id(ws, "astronaut.jpg"))
    by_label = {str(label): i for i, label in enumerate(astro.label)}
    car = by_label["car"]
    assert astro.xyxy[car].tolist() == [10.5, 20.25, 110.0, 90.75]
    assert astro.attributes[car] == {"occluded": 1, "z_order": 2, "color": "blue", "parked": "true", "plate": "AB 123"}
    road = [i for i, label in enumerate(astro.label) if label == "road"]
    polygon = astro.geometry[road[0]]
    assert np.asarray(polygon.exterior.coords)[:-1].tolist() == [[300, 300], [400, 310], [380, 420], [310, 400]]
    assert astro.attributes[road[0]] == {"z_order": 1}
    assert shapely.equals(astro.geometry[road[1]], shapely.Polygon([(10, 300), (60, 300), (60, 350)]))
    sign = astro.geometry[by_label["sign"]]  # 40 x 20 around (220, 210), turned 90° about its centre
    assert np.allclose(sign.bounds, (210, 190, 230, 230)) and math.isclose(sign.area, 800)
    assert np.allclose(sign.exterior.coords[0], (230, 190))  # CVAT turns clockwise on screen: (200, 200) goes here
    eyes = [astro.xyxy[i][:2].tolist() for i, label in enumerate(astro.label) if label == "eye"]
    assert eyes == [[220.5, 180.0], [260.0, 182.0]]
    face = by_label["face"]
    assert astro.attributes[face] == {"source": "auto"}
    from gigavision.formats.rle import decode_window  # the stored mask: COCO RLE of its bbox window

    expected = cvat_window(DOCS_RLE, 13, 15)
    ys, xs = np.nonzero(expected)
    x0, y0 = 150 + int(xs.min()), 80 + int(ys.min())
    assert astro.xyxy[face].tolist() == [x0, y0, 150 + int(xs.max()) + 1, 80 + int(ys.max()) + 1]
    stored = decode_window(astro.mask[face])
    assert np.array_equal(stored, expected[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    assert str(astro.kind[by_label["portrait"]]) == "tag"

    assert ws.get_image(image_id(ws, "coins.png")).meta["split"] == "train"  # subset="Train"
    coins = ws.annotations.query(image_id(ws, "coins.png"))
    assert coins.xyxy.tolist() == [[5, 6, 25, 36]]
    assert coins.attributes[0] == {"color": "red", "parked": "false", "plate": ""}


def test_cvat_round_trip_is_byte_for_byte(tmp_path: Path, samples: dict[str, Path], workspace: gv.Workspace) -> None:
    """Every kind (a polygon with a hole becomes a CVAT mask), scores and attributes: export with the images →
    import into a fresh SQLite or PostgreSQL workspace with no flags → export: the same bytes."""
    source = gv.init_workspace(tmp_path / "source")
    annotate(source, samples)
    first = export_workspace(source, "cvat", tmp_path / "first", options=ExportOptions(images="copy"))
    source.close()
    assert (first.images, first.annotations) == (3, 8)
    assert dict(first.converted) == {"polygon with holes or several parts written as a CVAT mask": 1}
    xml = (tmp_path / "first" / "annotations.xml").read_text()
    assert '<box label="coin" source="manual" occluded="0" xtl="10.25" ytl="20" xbr="60.5" ybr="70" z_order="0">' in xml
    assert '<mask label="nucleus" source="auto" occluded="0" rle="' in xml
    assert '<attribute name="score">0.75</attribute>' in xml
    assert "<values>front\nside</values>" in xml

    report = import_annotations(workspace, "cvat", tmp_path / "first")
    assert report.ok, report.as_dict()
    assert (report.annotations, report.images_ingested) == (8, 3)
    assert dict(report.by_kind) == {"box": 2, "mask": 2, "point": 1, "polygon": 1, "tag": 2}
    second = export_workspace(workspace, "cvat", tmp_path / "second", options=ExportOptions(images="copy"))
    assert (second.images, second.annotations, second.files) == (first.images, first.annotations, first.files)
    one, two = tree(tmp_path / "first"), tree(tmp_path / "second")
    assert list(one) == list(two)
    assert [name for name in one if one[name] != two[name]] == []


def test_cvat_bad_input(tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace) -> None:
    ws = sqlite_workspace
    evil = tmp_path / "evil"
    cvat_task(
        evil, samples, COINS.replace('<attribute name="plate"></attribute>', '<attribute name="plate">&x;</attribute>')
    )
    xml = (evil / "annotations.xml").read_text()
    (evil / "annotations.xml").write_text(
        xml.replace("<annotations>", '<!DOCTYPE a [<!ENTITY x "boom">]>\n<annotations>', 1)
    )
    with pytest.raises(InvalidInput, match=r"annotations\.xml: XML with a DTD or entity declarations is refused"):
        import_annotations(ws, "cvat", evil)
    assert ws.list_images(0, 10)[1] == 0  # nothing stored, not even the images

    bad = COINS.replace('xbr="25.00"', 'xbr="nan"').replace("  </image>", "", 1)
    bad += (
        '    <box label="car" source="manual" occluded="0" xtl="1" ytl="2" xbr="3" ybr="4" z_order="0">\n    </box>\n'
    )
    bad += "  </image>\n"
    bad += '  <image id="2" name="missing.jpg" width="10" height="10">\n'
    bad += '    <tag label="portrait" source="manual">\n    </tag>\n  </image>'
    root = cvat_task(tmp_path / "bad", samples, bad)
    report = import_annotations(ws, "cvat", root)
    assert report.annotations == 1 and not report.ok  # the valid box of coins.png
    (rejected,) = report.rejected
    assert (rejected.item, rejected.reason) == ("image coins.png <box> #0", "xbr must be a finite number, got 'nan'")
    (unmatched,) = report.unmatched
    assert (unmatched.ref, unmatched.annotations) == ("missing.jpg", 1)
    assert ws.annotations.query(image_id(ws, "coins.png")).xyxy.tolist() == [[1, 2, 3, 4]]
