<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="com.autoesl.autopilot.project" name="jetdeploy_tagger_prj" top="jetdeploy_tagger">
  <solutions>
    <solution name="solution1" status="active"/>
  </solutions>
</project>
